"""The Python-backend stub runs on the serving process's interpreter and packages, whatever the
shell held; an instance that does not refuses to load; every output is checked on its way out.

A stub embeds Python and finds its prefix through the first ``python3`` on PATH. The tests here
start that ``python3`` from tritonserver's environment, as the stub does, under shells a service
really has (no venv on PATH, another Python's packages on PYTHONPATH, PYTHONHOME set), and
compare what it imports with this process. tests/test_as_installed.py does the same end to end,
through the console script.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("pytriton", reason="serve needs the [serve] extra (PyTriton)")

from serving import free_ports, stubs_of  # tests/ is on sys.path under pytest's default import mode

from resnet_deploy.serving import server as server_module
from resnet_deploy.serving.backend import (
    NUMPY_TYPES,
    DeclaredOutput,
    declared_output,
    imported_packages,
    package_mismatch,
)
from resnet_deploy.serving.process import (
    ServeError,
    check_stub_numpy,
    shared_memory_segments,
    tritonserver_environment,
    tritonserver_files,
    write_stub_interpreter,
)
from resnet_deploy.serving.server import ModelServer, ServeOptions

PROBE = """
import json, sys
import numpy, onnxruntime, resnet_deploy
from resnet_deploy.serving.backend import imported_packages
print(json.dumps({"path": [p for p in sys.path if p], "packages": imported_packages()}))
"""
BASE_SITE_PACKAGES = sysconfig.get_paths(vars={"base": sys.base_prefix})["purelib"]
# What a service's shell may hold instead of the activated venv (each with the venv off PATH)
SHELLS = {
    "no venv on PATH": {},
    "another Python's packages on PYTHONPATH": {"PYTHONPATH": BASE_SITE_PACKAGES},
    "PYTHONHOME of another Python": {"PYTHONHOME": "/usr"},
    "a user site of its own": {"PYTHONUSERBASE": "/nonexistent-user-base"},
}


def shell_path() -> str:
    """PATH without this venv's bin: the system's and the base interpreter's Pythons first."""
    venv_bin = str(Path(sys.executable).parent)
    others = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    return os.pathsep.join([str(Path(sys._base_executable).parent), "/usr/bin", "/bin", *others])


@pytest.mark.parametrize("shell", SHELLS, ids=list(SHELLS))
def test_stub_python_imports_what_serve_imports(shell, tmp_path, monkeypatch):
    """The ``python3`` the stub finds on PATH has this process's sys.path and packages."""
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.setenv("PATH", shell_path())
    for name, value in SHELLS[shell].items():
        monkeypatch.setenv(name, value)
    stub_bin = write_stub_interpreter(tmp_path / "python")
    environment = tritonserver_environment(tritonserver_files(), stub_bin)
    python3 = shutil.which("python3", path=environment["PATH"])
    assert python3 == str(stub_bin / "python3")
    ran = subprocess.run(
        [python3, "-c", PROBE], env=environment, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    seen = json.loads(ran.stdout)
    assert seen["packages"] == imported_packages()
    ours = [os.path.abspath(p) for p in sys.path]
    assert seen["path"][: len(ours)] == ours


def test_without_the_handover_the_stub_python_is_another(tmp_path, monkeypatch):
    """The control: the same shell without our folder first on PATH imports other packages."""
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    python3 = shutil.which("python3", path=shell_path())
    assert python3 is not None
    ran = subprocess.run(
        [python3, "-c", "import sys; print(sys.prefix)"],
        env={**os.environ, "PATH": shell_path()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0 and ran.stdout.strip() != sys.prefix


def test_an_instance_on_other_packages_refuses_to_load(r18, monkeypatch):
    """An instance whose numpy is not serve's fails its load, and serve says both in one line."""
    packages = imported_packages()
    told = {**packages, "numpy": "0.0.1 from /elsewhere/numpy"}
    monkeypatch.setattr(server_module, "imported_packages", lambda: told)
    http, grpc, metrics = free_ports(3)
    server = ModelServer(r18, ServeOptions(http_port=http, grpc_port=grpc, metrics_port=metrics))
    with pytest.raises(ServeError) as raised:
        server.start()
    message = str(raised.value)
    assert "\n" not in message and "Traceback" not in message
    assert f"numpy {packages['numpy']} where serve runs 0.0.1 from /elsewhere/numpy" in message
    assert "model resnet18" in message
    assert not stubs_of(os.getpid()) and not shared_memory_segments(os.getpid())


def test_package_mismatch_names_each_difference():
    expected = {"python": "3.11.7 (/py)", "numpy": "1.26.4 from /a", "onnxruntime": "1.31 from /b"}
    assert package_mismatch(expected, dict(expected)) is None
    found = {**expected, "numpy": "2.4.6 from /c"}
    del found["onnxruntime"]
    assert package_mismatch(expected, found) == (
        "numpy 2.4.6 from /c where serve runs 1.26.4 from /a; "
        "onnxruntime missing where serve runs 1.31 from /b"
    )


NUMERIC = [t for t in NUMPY_TYPES if t != "TYPE_STRING"]
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


@given(shape=shapes, data_type=st.sampled_from(NUMERIC))
def test_an_output_as_declared_passes(shape, data_type):
    declared = DeclaredOutput(data_type, (-1, *shape[1:]))
    array = np.zeros(shape, NUMPY_TYPES[data_type])
    assert declared.problem(shape, array) is None


@given(shape=shapes, data_type=st.sampled_from(NUMERIC), other=st.sampled_from(NUMERIC))
def test_an_output_of_another_data_type_is_refused(shape, data_type, other):
    declared = DeclaredOutput(data_type, (-1, *shape[1:]))
    array = np.zeros(shape, NUMPY_TYPES[other])
    problem = declared.problem(shape, array)
    assert (problem is None) == (np.dtype(NUMPY_TYPES[other]) == declared.dtype)
    if problem:
        assert data_type in problem


@given(shape=shapes, extra=st.integers(1, 3))
def test_an_output_of_another_shape_is_refused(shape, extra):
    declared = DeclaredOutput("TYPE_FP32", (-1, *shape[1:]))
    wrong = (*shape, extra)  # one dimension more than declared
    assert "where the config declares" in declared.problem(wrong, np.zeros(wrong, np.float32))
    if len(shape) > 1:
        wider = (shape[0], *shape[1:-1], shape[-1] + extra)
        assert declared.problem(wider, np.zeros(wider, np.float32))


def test_empty_values_for_a_full_shape_are_refused():
    """What a stub on another numpy sent: shape [2, 1000] and no values."""
    declared = DeclaredOutput("TYPE_FP32", (-1, 1000))
    problem = declared.problem((2, 1000), np.zeros((0,), np.float32))
    assert problem == "[0] values held for shape [2, 1000]"


def test_declared_output_adds_the_batch_dimension_when_triton_batches():
    output = {"name": "logits", "data_type": "TYPE_FP32", "dims": ["1000"]}
    assert declared_output(output, {"max_batch_size": 8}).dims == (-1, 1000)
    assert declared_output(output, {"max_batch_size": 0}).dims == (1000,)


def test_a_numpy_the_stub_misreads_is_refused_before_any_server(monkeypatch):
    """numpy 2 (e.g. first on PYTHONPATH) made the stub send empty tensors: refused up front."""
    check_stub_numpy()  # this environment's numpy is in PyTriton's range
    monkeypatch.setattr(np, "__version__", "2.4.6")
    with pytest.raises(ServeError) as raised:
        check_stub_numpy()
    message = str(raised.value)
    assert message.startswith(f"numpy 2.4.6 (from {Path(np.__file__).parent}) is outside")
    assert "nvidia-pytriton" in message and "numpy<2" in message and "empty tensors" in message
