"""A `resnet-deploy serve` process for tests: free loopback ports, bounded waits, stop by PID.

    with running_server(model_path) as server:      # ready when the block starts
        client = tritonclient.http.InferenceServerClient(server.http_address)
        ...
    # stopped with SIGTERM; its exit code, processes and shared memory checked

``start_server``/``stop_server`` do the same in two steps, for tests that send the signal
themselves or look at the output; ``launch_server``/``wait_ready`` split the start, for tests
that accept a refusal to start. By default the server runs on this interpreter in this
environment; ``program``, ``env`` and ``cwd`` run it as a user would (a console script by its
full path, another shell's variables, another folder). Every process started here is stopped
by its own PID. ``http_infer``, ``grpc_infer`` and ``classify`` are one request each through
tritonclient. ``count_model_reads`` records every ONNX file a command parses (read-once checks).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image

from resnet_deploy.model import onnxfile
from resnet_deploy.runtime.providers import SessionConfig, create_session
from resnet_deploy.serving.process import (
    free_loopback_ports,
    shared_memory_segments,
    shm_prefix,
)

HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0  # two cores shared with other work: loading can take a while
STOP_TIMEOUT_S = 90.0
POLL_S = 0.2
CLIENT_TIMEOUT_S = 60.0
SHM = Path("/dev/shm")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on the loopback now, chosen as serve chooses its own."""
    return free_loopback_ports(count)


@dataclass
class ServedProcess:
    """A running `resnet-deploy serve` and what it started."""

    process: subprocess.Popen
    name: str  # the tensor model's name
    image_name: str | None
    http_port: int
    grpc_port: int
    metrics_port: int
    folder: Path  # stdout.txt and stderr.txt of the server
    children: list[int] = field(default_factory=list)  # tritonserver and its backend stubs
    shm: set[Path] = field(default_factory=set)  # /dev/shm segments its processes mapped

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def http_address(self) -> str:  # tritonclient.http's url
        return f"{HOST}:{self.http_port}"

    @property
    def grpc_address(self) -> str:  # tritonclient.grpc's url
        return f"{HOST}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}/metrics"

    def ready(self, model: str | None = None) -> bool:
        """The model's own readiness endpoint answers 200 (the server's answers too early)."""
        url = f"http://{self.http_address}/v2/models/{model or self.name}/ready"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5.0) as response:
            return response.read().decode()

    def stdout(self) -> str:
        return (self.folder / "stdout.txt").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.folder / "stderr.txt").read_text(errors="replace")

    def record_resources(self) -> None:
        """Remember the child processes and shared memory now in use, to check after stop."""
        for pid in descendants(self.pid):
            if pid not in self.children:
                self.children.append(pid)
        for pid in [self.pid, *self.children]:
            self.shm |= mapped_shm(pid)


def serve_command(model: Path, *args: str, program: Sequence[str] | None = None) -> list[str]:
    """The command line of `resnet-deploy serve`: ``program`` (e.g. a console script by its
    full path), or by default this interpreter running the CLI."""
    code = "from resnet_deploy.cli import main; main(prog_name='resnet-deploy')"
    return [*(program or [sys.executable, "-c", code]), "serve", str(model), *args]


def launch_server(
    model: Path,
    *args: str,
    name: str = "resnet18",
    image_model: bool = True,
    program: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ServedProcess:
    """Start `resnet-deploy serve MODEL ARGS` on free loopback ports, without waiting.

    ``name`` is the model name the server will use (the export's arch unless ``--name`` is in
    ``args``); ``program``, ``env`` and ``cwd`` default to this interpreter, environment and
    folder.
    """
    http, grpc, metrics = free_ports(3)
    folder = Path(tempfile.mkdtemp(prefix="serve-test-"))
    command = serve_command(
        model, "--host", HOST, "--http-port", str(http), "--grpc-port", program=program
    )
    command += [str(grpc), "--metrics-port", str(metrics), *args]
    with open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "wb") as err:
        process = subprocess.Popen(
            command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=cwd
        )
    return ServedProcess(
        process, name, f"{name}_image" if image_model else None, http, grpc, metrics, folder
    )


def wait_ready(server: ServedProcess, timeout_s: float = START_TIMEOUT_S) -> bool:
    """True once serve says it is ready (after its canary) and every model of ``server``
    answers ready; False if the process exits first.

    Triton's ready endpoints answer before serve's canary has run, so they alone do not say
    the server was judged right. Raises AssertionError with the server's stderr if it is
    neither within ``timeout_s``; the process is then already stopped.
    """
    deadline = time.monotonic() + timeout_s
    models = [m for m in (server.name, server.image_name) if m]
    said = f"serving {server.name} (ready in"
    while not (said in server.stdout() + server.stderr() and all(server.ready(m) for m in models)):
        if server.process.poll() is not None:
            return False
        if time.monotonic() > deadline:
            server.record_resources()
            stop_server(server, signal.SIGKILL)
            stderr = server.stderr()[-2000:]
            raise AssertionError(f"server not ready in {timeout_s:.0f} s: {stderr}")
        time.sleep(POLL_S)
    server.record_resources()
    return True


def start_server(
    model: Path, *args: str, timeout_s: float = START_TIMEOUT_S, **options: Any
) -> ServedProcess:
    """``launch_server(MODEL, ARGS, **options)``; return once ready.

    Raises AssertionError with the server's stderr if it exits or is not ready in
    ``timeout_s``; the process is then already stopped.
    """
    server = launch_server(model, *args, **options)
    if not wait_ready(server, timeout_s):
        server.record_resources()
        stop_server(server, signal.SIGKILL)
        raise AssertionError(
            f"server not ready (exit code {server.process.returncode}): {server.stderr()[-2000:]}"
        )
    return server


def stop_server(
    server: ServedProcess, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S
) -> int:
    """Signal the server by its PID and wait; SIGKILL it (and its children) past ``timeout_s``.

    Returns its exit code (negative: killed by that signal).
    """
    if server.process.poll() is None:
        server.record_resources()
        server.process.send_signal(sig)
        try:
            server.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            for pid in [server.pid, *server.children]:
                kill(pid)
            server.process.wait(10)
    return server.process.returncode


def stubs_of(pid: int) -> list[int]:
    """Python-backend stubs started for the server of ``pid``, wherever they were re-parented:
    each names its shared-memory region, which carries that pid, on its command line."""
    prefix = shm_prefix(pid)
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(prefix in part for part in process.info["cmdline"] or ()) and running(process.pid):
            found.append(process.pid)
    return found


def leftovers(server: ServedProcess, wait_s: float = 30.0) -> tuple[list[int], list[Path]]:
    """Child processes (the ones recorded, and any stub of this server, orphaned or not) still
    alive and shared-memory segments still present after a stop.

    Waits up to ``wait_s`` for them to go: a stub may take a moment after tritonserver exits.
    """
    deadline = time.monotonic() + wait_s
    while True:
        recorded = [pid for pid in server.children if running(pid)]
        alive = sorted(set(recorded) | set(stubs_of(server.pid)))
        own = set(shared_memory_segments(server.pid))
        segments = sorted(p for p in server.shm | own if p.exists())
        if (not alive and not segments) or time.monotonic() > deadline:
            return alive, segments
        time.sleep(POLL_S)


def assert_clean_exit(server: ServedProcess, code: int) -> None:
    """Exit code 0, no process and no /dev/shm segment left behind; kills what is left."""
    alive, segments = leftovers(server)
    for pid in alive:
        kill(pid)
    assert code == 0, f"exit code {code}: {server.stderr()[-2000:]}"
    assert not alive, f"processes left behind: {alive}"
    assert not segments, f"shared memory left behind: {segments}"


@contextmanager
def running_server(
    model: Path, *args: str, stop_signal: int = signal.SIGTERM, **options: object
) -> Iterator[ServedProcess]:
    """A ready server for the block; stopped (SIGTERM) after it and checked to be clean."""
    server = start_server(model, *args, **options)
    try:
        yield server
    finally:
        code = stop_server(server, stop_signal)
    assert_clean_exit(server, code)


def http_infer(server: ServedProcess, x: np.ndarray, binary: bool = True) -> np.ndarray:
    """The tensor model's logits for ``x``, over HTTP."""
    client = httpclient.InferenceServerClient(server.http_address, network_timeout=CLIENT_TIMEOUT_S)
    try:
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        output = httpclient.InferRequestedOutput("logits", binary_data=binary)
        return client.infer(server.name, [tensor], outputs=[output]).as_numpy("logits")
    finally:
        client.close()


def grpc_infer(server: ServedProcess, x: np.ndarray) -> np.ndarray:
    """The tensor model's logits for ``x``, over gRPC."""
    client = grpcclient.InferenceServerClient(server.grpc_address)
    try:
        tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(server.name, [tensor], client_timeout=CLIENT_TIMEOUT_S)
        return result.as_numpy("logits")
    finally:
        client.close()


def jpeg(seed: int = 0, size: tuple[int, int] = (320, 240)) -> bytes:
    """A JPEG of seeded noise: the same file on every run."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG")
    return out.getvalue()


def classify(server: ServedProcess, images: list[bytes]) -> dict[str, np.ndarray]:
    """Every output of the image model for ``images``, one row each, over HTTP."""
    client = httpclient.InferenceServerClient(server.http_address, network_timeout=CLIENT_TIMEOUT_S)
    try:
        data = np.array([[image] for image in images], dtype=object)
        tensor = httpclient.InferInput("image", list(data.shape), "BYTES")
        tensor.set_data_from_numpy(data)
        result = client.infer(server.image_name, [tensor])
        names = ("classes", "class_indices", "probabilities", "error")
        return {name: result.as_numpy(name) for name in names}
    finally:
        client.close()


def in_process(model: Path) -> Callable[[np.ndarray], np.ndarray]:
    """ONNX Runtime in this process on ``model``: the logits a server must answer a batch with."""
    session = create_session(model, SessionConfig())
    return lambda batch: session.run(["logits"], {"input": batch})[0]


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``."""
    with suppress(psutil.NoSuchProcess):
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    return []


def mapped_shm(pid: int) -> set[Path]:
    """The /dev/shm files process ``pid`` has mapped."""
    try:
        maps = psutil.Process(pid).memory_maps(grouped=True)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return set()
    return {Path(m.path.removesuffix(" (deleted)")) for m in maps if m.path.startswith(f"{SHM}/")}


def running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def count_model_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths ``load_onnx`` parses from now on, wherever the library looks it up: in
    ``model.onnxfile`` (``read_model``) and in every module that imported it by name."""
    original = onnxfile.load_onnx
    reads: list[Path] = []

    def counting(path: Path, *args: Any, **kwargs: Any) -> Any:
        reads.append(Path(path))
        return original(path, *args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("resnet_deploy") and getattr(module, "load_onnx", None) is original:
            monkeypatch.setattr(module, "load_onnx", counting)
    return reads
