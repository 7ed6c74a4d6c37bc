"""The ``tritonserver`` child process: finding PyTriton's build, its environment, starting it,
reading its log, and the shared memory its Python-backend stubs leave.

What the Triton build leaves to its user is handled here: the stub loads ``libpython3.X.so``
by soname, so an interpreter built elsewhere (pyenv, conda) gets the system's library unless
its own LIBDIR comes first on the loader path; the stub finds its Python's prefix through the
first ``python3`` on PATH, so it gets a folder of ours naming this interpreter and its
``sys.path`` (``write_stub_interpreter``); and the child is tied to this process, so it never
outlives a ``serve`` that was killed.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import re
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil
from packaging.requirements import Requirement

from resnet_deploy.errors import InputError, ResnetDeployError, ToolFailure

SHM_DIR = Path("/dev/shm")
PYTRITON = "nvidia-pytriton"  # the distribution that ships tritonserver and its stubs
STUB_NAME = "triton_python_backend_stub"
SERVE_FOLDER = "resnet-deploy-serve-"  # then the serving process's pid (see sweep_leftovers)
GROUP_EXIT_S = 10.0  # for killed processes to be gone: SIGKILL takes effect in milliseconds


class ServeError(ResnetDeployError):
    """The server could not start; the message gives the cause."""


class ServerFailure(ToolFailure):
    """tritonserver or one of its model instances stopped while serving; the message says which
    and how (the signal, or the exit code)."""


@dataclass(frozen=True)
class Stub:
    """One Python-backend stub: a model instance in its own process."""

    pid: int
    model: str


def url_host(host: str) -> str:
    """``host`` as it goes before ":PORT" in an address or URL: an IPv6 address bracketed."""
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class Listen:
    """Where tritonserver listens: one host, a port for each protocol."""

    host: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def grpc_host(self) -> str:
        """The host as Triton's gRPC server takes it: it appends ":PORT", so IPv6 is bracketed."""
        return url_host(self.host)

    @property
    def evhtp_host(self) -> str:
        """The host as Triton's HTTP and metrics servers (libevhtp) take it: an IPv6 address is
        marked ``ipv6:``, or it is read as an IPv4 name and bound to 255.255.255.255."""
        return f"ipv6:{self.host}" if ":" in self.host else self.host

    @property
    def ports(self) -> dict[str, int]:
        """Each port by the option field that sets it, as errors name it."""
        return {
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "metrics_port": self.metrics_port,
        }


def free_loopback_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now, each different (the OS picks them)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


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


# The repository's model.py: the stub has this process's packages before it runs it (see below).
BACKEND_STUB_SOURCE = (
    "# Written by resnet-deploy serve: Triton's Python backend runs this file.\n"
    "from resnet_deploy.serving.backend import TritonPythonModel  # noqa: F401\n"
)
# Variables that move an interpreter's prefix or search path; none reaches a stub.
PYTHON_PATH_VARIABLES = (
    "PYTHONHOME",
    "PYTHONPATH",
    "PYTHONPLATLIBDIR",
    "PYTHONSAFEPATH",
    "PYTHONSTARTUP",
    "PYTHONUSERBASE",
    "PYTHONEXECUTABLE",
    "VIRTUAL_ENV",
    "__PYVENV_LAUNCHER__",
)
PATHS_MODULE = "_resnet_deploy_stub_paths"


def check_stub_numpy() -> None:
    """Refuse a numpy outside the range PyTriton declares for its Python-backend stub.

    The stub's C++ reads numpy arrays with numpy 1's memory layout: under numpy 2 it sent every
    output as an empty tensor, with status 200 (measured with PyTriton 0.7.0's build). Its wheel
    requires numpy<2, but PYTHONPATH or a later install can still put numpy 2 first, and the
    stub imports what this process imports.
    """
    import numpy

    for line in importlib.metadata.requires(PYTRITON) or []:
        requirement = Requirement(line)
        if requirement.name == "numpy" and numpy.__version__ not in requirement.specifier:
            raise ServeError(
                f"numpy {numpy.__version__} (from {Path(numpy.__file__).parent}) is outside "
                f"{PYTRITON} {importlib.metadata.version(PYTRITON)}'s {requirement}: its "
                "Python-backend stub would answer with empty tensors; put a numpy in that "
                "range first (check PYTHONPATH)"
            )


def write_stub_interpreter(folder: Path) -> Path:
    """A venv-shaped folder that makes every Python-backend stub start as this interpreter.

    The stub embeds Python without naming a program, so CPython looks up ``python3`` on PATH
    and takes its prefix, its site-packages and any ``pyvenv.cfg`` from what it finds there.
    With the venv not first on PATH (a service, cron, a container), the stub imported the base
    interpreter's numpy before any line of ours ran, and answered with empty tensors. This
    folder goes first on the stub's PATH instead: its ``pyvenv.cfg`` names this interpreter's
    home and keeps the system's and the user's site-packages out, and a ``.pth`` file sets
    ``sys.path`` to this process's own, in order, after running the ``.pth`` files of its
    site folders (an editable install's import hook among them). Returns the ``bin`` folder.
    """
    base_executable = Path(getattr(sys, "_base_executable", "") or sys.executable)
    home = base_executable.parent if base_executable.is_file() else Path(sys.base_prefix, "bin")
    bin_folder = folder / "bin"
    bin_folder.mkdir(parents=True)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for name in ("python3", "python", f"python{version}"):
        (bin_folder / name).symlink_to(sys.executable)
    (folder / "pyvenv.cfg").write_text(
        f"home = {home}\ninclude-system-site-packages = false\nversion = {version}\n"
    )
    site_packages = Path(site.getsitepackages([str(folder)])[0])
    site_packages.mkdir(parents=True)
    path = [os.path.abspath(entry) for entry in sys.path]  # "" is the folder serve started in
    site_folders = [*site.getsitepackages(), site.getusersitepackages()]
    (site_packages / f"{PATHS_MODULE}.py").write_text(
        "# Written by resnet-deploy serve: this stub imports what the serving process imports.\n"
        "import site\nimport sys\n\n"
        f"PATH = {path!r}\n"
        f"for folder in {[f for f in site_folders if f in sys.path]!r}:\n"
        "    site.addsitedir(folder)\n"
        "sys.path[:] = PATH + [entry for entry in sys.path if entry not in PATH]\n"
    )
    (site_packages / "resnet_deploy_stub.pth").write_text(f"import {PATHS_MODULE}\n")
    return bin_folder


def launch_tritonserver(
    files: TritonFiles,
    repository: Path,
    listen: Listen,
    http_upstream: int,
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
    stub_bin = write_stub_interpreter(folder / "python")
    for source in [*files.python_backend.iterdir(), files.stub]:
        if source.is_file():
            (backends / source.name).symlink_to(source)
    command = [
        str(files.binary),
        f"--model-repository={repository}",
        f"--backend-directory={backends.parent}",
        f"--backend-config=python,shm-region-prefix-name={shm_prefix(os.getpid())}",
        "--http-address=127.0.0.1",  # behind serving.front, which listens on listen.http_port
        f"--http-port={http_upstream}",
        f"--grpc-address={listen.grpc_host}",
        f"--grpc-port={listen.grpc_port}",
        f"--metrics-address={listen.evhtp_host}",
        f"--metrics-port={listen.metrics_port}",
        "--allow-gpu-metrics=false",
        f"--exit-timeout-secs={exit_timeout_s}",
        f"--log-file={log_file}",
        "--log-verbose=0",
    ]
    return subprocess.Popen(
        command,
        env=tritonserver_environment(files, stub_bin),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_terminate_with_parent,
    )


def end_process_group(process: subprocess.Popen, timeout_s: float = GROUP_EXIT_S) -> None:
    """Kill what is left of tritonserver's process group once tritonserver has exited, and wait
    until none of it runs.

    Stopped while it loads its models, tritonserver exits without stopping the stubs it has
    started; they are left to init, holding memory and ports' worth of threads, for good. The
    wait makes the shared-memory cleanup that follows final: a stub killed while it creates a
    region would otherwise create it after the cleanup, and leave it.
    """
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def group_members(group: int) -> list[int]:
    """The processes of process group ``group`` that still run (zombies aside)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        state, process_group = fields[0], int(fields[2])
        if process_group == group and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def group_stubs(group: int) -> list[Stub]:
    """The Python-backend stubs running in process group ``group`` (tritonserver's)."""
    stubs = []
    for pid in group_members(group):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # a stub's arguments: its model.py (MODEL/VERSION/model.py), its shared memory, ...
        if Path(argv[0].decode(errors="replace")).name == STUB_NAME and len(argv) > 2:
            model = Path(argv[1].decode(errors="replace")).parent.parent.name
            stubs.append(Stub(pid, model))
    return stubs


def how_it_ended(pid: int) -> str | None:
    """How process ``pid`` ended ("was killed by SIGKILL", "exited with code 1"), or None while
    it runs. A stub that ends stays a zombie until tritonserver collects it, and its wait status
    is readable until then; after that only "ended" is known."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return "ended"
    if fields[0] not in ("Z", "X"):
        return None
    status = int(fields[-1])  # the wait status, as waitpid gives it
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with code {os.WEXITSTATUS(status)}"


def _terminate_with_parent() -> None:
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def tritonserver_environment(files: TritonFiles, stub_bin: Path) -> dict[str, str]:
    """This environment with the loader path and the Python tritonserver's stubs need.

    ``stub_bin`` (``write_stub_interpreter``) goes first on PATH, and no variable that would
    move the stub's prefix or search path is passed on: the stub's packages are this process's
    whatever the shell that started it held.

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
    environment = {k: v for k, v in os.environ.items() if k not in PYTHON_PATH_VARIABLES}
    search = [str(stub_bin), *filter(None, os.environ.get("PATH", "").split(os.pathsep))]
    return {
        **environment,
        "LD_LIBRARY_PATH": ":".join(folders),
        "PATH": os.pathsep.join(search),
        "PYTHONNOUSERSITE": "1",
    }


def model_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def serve_folder_prefix(pid: int) -> str:
    """How the temporary folder of a server started by ``pid`` is named (repository, log)."""
    return f"{SERVE_FOLDER}{pid}-"


def sweep_leftovers() -> list[str]:
    """Remove what servers whose `serve` was killed left: their stubs, shared memory and folders.

    SIGKILL gives `serve` no chance to clean up; tritonserver follows it (its parent-death
    signal), but may leave its stubs running, and the folder and shared-memory regions stay.
    Each carries the PID of the `serve` that made it, so only a dead one's are touched.
    """
    owner = re.compile(r"resnet-deploy-(?:serve-)?(\d+)-")
    found: dict[int, list[str]] = {}
    folders = Path(tempfile.gettempdir()).glob(f"{SERVE_FOLDER}*")
    for path in [*folders, *SHM_DIR.glob("resnet-deploy-*")]:
        match = owner.match(path.name)
        if match and not _running(int(match[1])):
            found.setdefault(int(match[1]), []).append(str(path))
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
    for process in psutil.process_iter(["cmdline"]):
        argv = process.info["cmdline"] or []
        if argv and Path(argv[0]).name == STUB_NAME and len(argv) > 2:
            match = owner.match(argv[2])  # the stub's shared-memory region
            if match and not _running(int(match[1])):
                with suppress(psutil.Error):
                    process.kill()
                found.setdefault(int(match[1]), []).append(f"stub pid {process.pid}")
    return [
        f"removed what a killed serve (pid {pid}) left: {len(items)} stub(s), folder(s) and "
        "shared-memory region(s)"
        for pid, items in found.items()
    ]


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
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
