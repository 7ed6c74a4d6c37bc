"""The ``tritonserver`` child process: finding PyTriton's build, its environment, starting it,
reading its log, and the shared memory its Python-backend stubs leave.

What the Triton build leaves to its user is handled here: the stub loads ``libpython3.X.so``
by soname, so an interpreter built elsewhere (pyenv, conda) gets the system's library unless
its own LIBDIR comes first on the loader path; and the child is tied to this process, so it
never outlives a ``serve`` that was killed.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from resnet_deploy.errors import InputError, ResnetDeployError

SHM_DIR = Path("/dev/shm")


class ServeError(ResnetDeployError):
    """The server could not start or stopped on its own; the message gives the cause."""


@dataclass(frozen=True)
class Listen:
    """Where tritonserver listens: one host, a port for each protocol."""

    host: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def ports(self) -> dict[str, int]:
        """Each port by the option field that sets it, as errors name it."""
        return {
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
        }


def check_ports_free(listen: Listen) -> None:
    """Refuse a port already taken now, naming it, rather than after tritonserver fails."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    for option, port in listen.ports.items():
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton binds
            try:
                probe.bind((listen.host, port))
            except OSError as exc:
                if exc.errno == 98:  # EADDRINUSE
                    raise InputError(
                        f"port {port} on {listen.host} is in use; pick another", options=[option]
                    ) from None
                raise InputError(f"cannot listen on {listen.host}:{port}: {exc.strerror}") from None


@dataclass(frozen=True)
class TritonFiles:
    """Where PyTriton's wheel keeps the Triton build it ships."""

    binary: Path  # bin/tritonserver
    libraries: Path  # the shared libraries it links
    python_backend: Path  # backends/python: libtriton_python.so and its utilities
    stub: Path  # the Python-backend stub built for this interpreter's version


def tritonserver_files() -> TritonFiles:
    """The Triton that nvidia-pytriton installs, with the stub for this Python, or a ServeError."""
    if importlib.util.find_spec("pytriton") is None:
        raise ServeError(
            "serve needs PyTriton's Triton build, which is not installed: "
            "pip install 'resnet-deploy[serve]' (Linux x86_64 or aarch64 only)"
        )
    from pytriton.utils.distribution import get_libs_path, get_root_module_path, get_stub_path

    root = get_root_module_path() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    files = TritonFiles(
        root / "bin" / "tritonserver",
        get_libs_path(),
        root / "backends" / "python",
        get_stub_path(version),
    )
    missing = [str(p) for p in (files.binary, files.python_backend, files.stub) if not p.exists()]
    if missing:
        raise ServeError(f"PyTriton's Triton build for Python {version} lacks {', '.join(missing)}")
    return files


def backend_stub_source() -> str:
    """The repository's model.py: this interpreter's packages, then the shared model class.

    ``site.addsitedir`` also runs the ``.pth`` files there, so an editable install of this
    package imports in the stub as it does here.
    """
    package_root = Path(__file__).resolve().parents[2]  # the folder holding resnet_deploy
    site_dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return (
        "# Written by resnet-deploy serve: Triton's Python backend runs this file.\n"
        "import site\nimport sys\n\n"
        f"sys.path.insert(0, {str(package_root)!r})\n"
        f"for folder in {site_dirs!r}:\n"
        "    site.addsitedir(folder)\n\n"
        "from resnet_deploy.serving.backend import TritonPythonModel  # noqa: E402,F401\n"
    )


def launch_tritonserver(
    files: TritonFiles,
    repository: Path,
    listen: Listen,
    *,
    exit_timeout_s: int,
    folder: Path,
    log_file: Path,
) -> subprocess.Popen:
    """tritonserver on ``repository``, with a backend folder holding the stub for this Python.

    Triton looks for the stub beside the backend's library, so the two are linked into one
    folder of our own. The child gets SIGTERM if this process dies without stopping it, and
    leads a process group of its own, which its stubs join: ``end_process_group`` can then
    remove stubs that tritonserver left behind.
    """
    backends = folder / "backends" / "python"
    backends.mkdir(parents=True)
    for source in [*files.python_backend.iterdir(), files.stub]:
        if source.is_file():
            (backends / source.name).symlink_to(source)
    command = [
        str(files.binary),
        f"--model-repository={repository}",
        f"--backend-directory={backends.parent}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix(os.getpid())}",
        f"--http-address={listen.host}",
        f"--http-port={listen.http_port}",
        f"--grpc-address={listen.host}",
        f"--grpc-port={listen.grpc_port}",
        f"--metrics-address={listen.host}",
        f"--metrics-port={listen.metrics_port}",
        "--allow-gpu-metrics=false",
        f"--exit-timeout-secs={exit_timeout_s}",
        f"--log-file={log_file}",
        "--log-verbose=0",
    ]
    return subprocess.Popen(
        command,
        env=tritonserver_environment(files),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_terminate_with_parent,
    )


def end_process_group(process: subprocess.Popen) -> None:
    """Kill what is left of tritonserver's process group once tritonserver has exited.

    Stopped while it loads its models, tritonserver exits without stopping the stubs it has
    started; they are left to init, holding memory and ports' worth of threads, for good.
    """
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _terminate_with_parent() -> None:
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def tritonserver_environment(files: TritonFiles) -> dict[str, str]:
    """This environment with the loader path tritonserver and its stubs need.

    The stub links ``libpython3.X.so`` by soname. Under pyenv or conda, the loader would
    otherwise find the system's library of another patch release, and the models fail to load
    with errors such as ``'_thread.RLock' object has no attribute '_recursion_count'``: this
    interpreter's LIBDIR goes first.
    """
    folders = [str(files.libraries)]
    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir:
        folders.insert(0, libdir)
    if os.environ.get("LD_LIBRARY_PATH"):
        folders.append(os.environ["LD_LIBRARY_PATH"])
    return {**os.environ, "LD_LIBRARY_PATH": ":".join(folders)}


def model_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def shm_prefix(pid: int) -> str:
    """How the Python backend names its /dev/shm regions for a server started by ``pid``."""
    return f"resnet-deploy-{pid}-"


def shared_memory_segments(pid: int) -> list[Path]:
    """The Python backend's /dev/shm regions for a server started by process ``pid``."""
    if not SHM_DIR.is_dir():
        return []
    return sorted(SHM_DIR.glob(f"{shm_prefix(pid)}*"))


def remove_shared_memory(pid: int) -> None:
    """Regions a killed stub could not remove; a clean stop leaves none."""
    for path in shared_memory_segments(pid):
        path.unlink(missing_ok=True)


# Error lines tritonserver logs on every start here, which say nothing about a failure.
BENIGN_LOG_ERRORS = ("CudaDriverHelper has not been initialized", "config modification time")


def log_cause(text: str) -> str | None:
    """The first telling error line of a tritonserver log, without its timestamp prefix."""
    for line in text.splitlines():
        if re.match(r"E\d{4} ", line) and not any(b in line for b in BENIGN_LOG_ERRORS):
            message = line.split("] ", 1)[-1].strip().strip('"').replace("\\n", "\n")
            # A Python traceback logged as one line: keep its first line and its final error.
            raised = re.findall(r"^\s*(\w+(?:Error|Exception): .+)$", message, re.M)
            if "Traceback" in message and raised:
                head = message.split("Traceback", 1)[0].strip().rstrip(":")
                message = f"{head}: {raised[-1].strip()}"
            message = " ".join(message.split())
            if "_recursion_count" in message or "libpython" in message:
                message += (
                    " (the Python backend stub loaded another libpython than this "
                    "interpreter's; is its LIBDIR readable?)"
                )
            return message
    return None
