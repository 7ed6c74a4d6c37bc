"""The tool run as users run it, not as its developers do: the console script by its full path,
the venv not activated, from a folder outside the checkout, with another Python first on PATH
whose packages differ from ours (numpy 2, where PyTriton pins ours below 2).

`serve` once answered every request with an empty tensor this way (its Python-backend stubs
took the first ``python3`` on PATH for their prefix and imported that Python's numpy) while
every test, run inside the activated venv, passed. The shells here are ones a service really
gets: no venv at all; also a user site and PYTHONHOME pointing elsewhere (neither reaches the
tool's own process, a venv's, but both reached the stubs); and PYTHONPATH holding the other
numpy, which reaches the tool itself and which PyTriton's stub cannot carry, so there `serve`
must refuse to start.
The last test builds the wheel, installs it in a fresh venv as the README does and runs
`doctor`, `run` and `serve` the same way.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from installed import (  # tests/ is on sys.path under pytest's default import mode
    SCRIPT,
    ForeignPython,
    dev_script,
    install_as_users_do,
    make_foreign_python,
    package_version,
    run_cli,
    user_environment,
)
from serving import (
    classify,
    grpc_infer,
    http_infer,
    in_process,
    jpeg,
    launch_server,
    leftovers,
    running_server,
    stop_server,
    wait_ready,
)

from resnet_deploy.predict import PredictOptions, predict
from tests.helpers import ATOL, RTOL, images

pytestmark = pytest.mark.slow
needs_serve = pytest.mark.skipif(
    importlib.util.find_spec("pytriton") is None,
    reason="serve needs the [serve] extra (PyTriton)",
)
REPO = Path(__file__).resolve().parents[1]


def outside_checkout(folder: Path) -> Path:
    assert REPO not in folder.resolve().parents, f"{folder} is inside the checkout"
    return folder


@pytest.fixture(scope="session")
def foreign_python(tmp_path_factory: pytest.TempPathFactory) -> ForeignPython:
    """The other Python: a venv with numpy 2, made once, outside the checkout."""
    foreign = make_foreign_python(outside_checkout(tmp_path_factory.mktemp("foreign")) / "venv")
    assert foreign.numpy_version.split(".")[0] != np.__version__.split(".")[0]
    return foreign


def shell(foreign: ForeignPython, name: str) -> dict[str, str]:
    """The environment of the shell ``name``, with ``foreign``'s python3 first on PATH."""
    variables = {
        "no venv": {},
        # numpy 2 in the user's site (as `pip install --user` leaves it) and the base
        # interpreter's home: the tool's venv ignores both
        "user site and home": {
            "PYTHONUSERBASE": str(foreign.prefix),
            "PYTHONHOME": sys.base_prefix,
        },
        # numpy 2 ahead of the tool's own: it reaches the tool's process too
        "pythonpath": {"PYTHONPATH": str(foreign.site_packages)},
    }[name]
    environment = user_environment(foreign, **variables)
    assert shutil.which("python3", path=environment["PATH"]) == str(foreign.bin / "python3")
    return environment


@pytest.fixture(scope="session")
def user_env(foreign_python: ForeignPython) -> dict[str, str]:
    """The shell most tests here run in: the most the tool's own process ignores."""
    return shell(foreign_python, "user site and home")


@pytest.fixture(scope="module")
def model(user_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ResNet18 exported by the console script, into the folder it was started in."""
    folder = outside_checkout(tmp_path_factory.mktemp("export"))
    run_cli(
        dev_script(), "export", "--arch", "resnet18", "-o", "r18.onnx", env=user_env, cwd=folder
    )
    return folder / "r18.onnx"


def test_verify_as_users_run_it(model: Path, user_env: dict[str, str], tmp_path: Path) -> None:
    args = ["verify", model, "--batch-sizes", "1", "--samples", "2", "--json", "verify.json"]
    run_cli(dev_script(), *args, env=user_env, cwd=tmp_path)
    assert json.loads((tmp_path / "verify.json").read_text())["passed"]


def test_bench_as_users_run_it(model: Path, user_env: dict[str, str], tmp_path: Path) -> None:
    """Timed beside PyTorch eager, on the tool's own packages whatever the shell holds."""
    args = ["bench", model, "--batch-sizes", "1", "--warmup", "1", "--iterations", "3"]
    run_cli(dev_script(), *args, "--json", "bench.json", env=user_env, cwd=tmp_path)
    record = json.loads((tmp_path / "bench.json").read_text())
    (result,) = record["batches"]
    assert result["error"] is None and result["runs"] == 3 and result["torch_runs"] == 3
    assert record["environment"]["packages"]["numpy"] == np.__version__


def test_run_as_users_run_it(user_env: dict[str, str], tmp_path: Path) -> None:
    args = ["run", "--arch", "resnet18", "--batch-sizes", "1", "--duration", "0.2"]
    args += ["--baseline", "none", "-o", "out", "--json", "run.json"]
    run_cli(dev_script(), *args, env=user_env, cwd=tmp_path)
    assert json.loads((tmp_path / "run.json").read_text())["verify"]["passed"]
    assert (tmp_path / "out" / "report.html").is_file()


@needs_serve
@pytest.mark.parametrize(
    ("name", "stop_signal"),
    [("no venv", signal.SIGINT), ("user site and home", signal.SIGTERM)],
    ids=["no venv", "user site and home"],
)
def test_serve_as_users_run_it(
    model: Path, foreign_python: ForeignPython, name: str, stop_signal: int, tmp_path: Path
) -> None:
    """Tensors over HTTP and gRPC and a JPEG give what the same file gives in process; the
    signal by PID stops everything (exit 0, no process or shared memory left)."""
    environment = shell(foreign_python, name)
    program = [str(dev_script())]
    with running_server(
        model, program=program, env=environment, cwd=tmp_path, stop_signal=stop_signal
    ) as server:
        x = images(2).numpy()
        expected = in_process(model)(x)
        np.testing.assert_allclose(http_infer(server, x), expected, atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(grpc_infer(server, x), expected, atol=ATOL, rtol=RTOL)
        photo = tmp_path / "photo.jpg"
        photo.write_bytes(jpeg())
        served = classify(server, [photo.read_bytes()])
        (prediction,) = predict(model, [photo], PredictOptions(top=5)).predictions
        assert served["error"][0, 0] == b""
        assert list(served["class_indices"][0]) == [s.class_index for s in prediction.top]
        expected_probabilities = [s.probability for s in prediction.top]
        np.testing.assert_allclose(served["probabilities"][0], expected_probabilities, atol=1e-5)


@needs_serve
def test_serve_with_another_numpy_on_pythonpath_refuses_before_any_server(
    model: Path, foreign_python: ForeignPython, tmp_path: Path
) -> None:
    """PYTHONPATH puts numpy 2 ahead of the tool's own, in its process too. PyTriton declares
    numpy below 2 for its stub, which answered empty tensors on numpy 2: serve refuses in one
    line, naming the numpy and the range, before any server starts, and leaves nothing."""
    environment = shell(foreign_python, "pythonpath")
    server = launch_server(model, program=[str(dev_script())], env=environment, cwd=tmp_path)
    try:
        assert not wait_ready(server), "serve started on a numpy its stub misreads"
    finally:
        code = stop_server(server, signal.SIGTERM)
    stderr = server.stderr()
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert code > 0 and len(errors) == 1 and "Traceback" not in stderr, (code, stderr[-2000:])
    numpy_there = f"numpy {foreign_python.numpy_version} (from {foreign_python.site_packages}"
    assert errors[0].startswith(f"Error: {numpy_there}"), errors[0]
    assert "outside nvidia-pytriton" in errors[0] and "numpy<2" in errors[0]
    assert "tritonserver" not in stderr  # refused before any server started
    assert leftovers(server) == ([], [])


@pytest.fixture(scope="session")
def installed(foreign_python: ForeignPython, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout, installed in a fresh venv outside it (torch's CPU
    build first, then the wheel with its serve extra); the venv's bin."""
    folder = outside_checkout(tmp_path_factory.mktemp("installed"))
    return install_as_users_do(REPO, folder, user_environment(foreign_python))


@needs_serve
def test_the_wheel_installed_as_users_do_runs_and_serves(
    installed: Path, user_env: dict[str, str], tmp_path: Path
) -> None:
    """Run by full path: `doctor` (its serve check included), a small `run`, one request."""
    script = installed / SCRIPT
    run_cli(script, "doctor", "--json", "doctor.json", env=user_env, cwd=tmp_path)
    doctor = json.loads((tmp_path / "doctor.json").read_text())
    assert any(p["works"] for p in doctor["providers"] if p["provider"] == "CPUExecutionProvider")
    assert doctor["packages"]["numpy"] == package_version(installed / "python", "numpy")
    assert doctor["serve"]["works"], doctor["serve"]["detail"]
    args = ["run", "--arch", "resnet18", "--batch-sizes", "1", "--duration", "0.2"]
    args += ["--baseline", "none", "-o", "out", "--json", "run.json"]
    run_cli(script, *args, env=user_env, cwd=tmp_path)
    assert json.loads((tmp_path / "run.json").read_text())["verify"]["passed"]
    model = tmp_path / "out" / "model.onnx"
    with running_server(model, program=[str(script)], env=user_env, cwd=tmp_path) as server:
        x = images(2).numpy()
        np.testing.assert_allclose(
            http_infer(server, x), in_process(model)(x), atol=ATOL, rtol=RTOL
        )
