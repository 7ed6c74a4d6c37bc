"""`serve`: the model behind a real Triton Inference Server, started through PyTriton.

PyTriton runs NVIDIA's own ``tritonserver`` as a child process; its Python backend hands each
batch that Triton's dynamic batcher forms to a function in this process, which runs it on an
ONNX Runtime session. Clients therefore speak KServe v2 (HTTP and gRPC) to the same scheduler,
queue policy and error handling that a production Triton has.

Two models are served:

- ``<name>``: the ONNX model's own tensors, with the name, data types and dims that `triton`
  writes for the same file (both come from ``triton.build_config``), so one client works
  against this server and against a Triton serving the repository.
- ``<name>_image``: encoded image bytes in (one image a batch row), the model's recorded
  preprocessing done here, the top-k class names and probabilities out. PyTriton can only fail
  a whole batch, and one client's bad file must not fail the others batched with it, so each
  row carries an ``error`` output: empty when the image was classified, else the reason.

Three things PyTriton leaves to its user are handled here: the Python-backend stub loads
``libpython3.X.so`` by soname, so an interpreter built elsewhere (pyenv, conda) gets the
system's library unless its own LIBDIR comes first on the loader path; ``/v2/health/ready``
answers before the models are loaded, so readiness is each model's own endpoint; and SIGTERM
would kill this process at once, losing in-flight requests, so both SIGINT and SIGTERM end in
the same drain: Triton stops taking requests, finishes those in flight, then exits.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import re
import shutil
import signal
import socket
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import triton_to_np_dtype

from resnet_deploy.errors import InputError, ResnetDeployError
from resnet_deploy.images import open_rgb, preprocess
from resnet_deploy.int8target import require_target
from resnet_deploy.labels import imagenet_classes
from resnet_deploy.metadata import ModelMetadata, read_metadata
from resnet_deploy.onnxfile import load_onnx
from resnet_deploy.placement import check_placement
from resnet_deploy.predict import softmax, top_k
from resnet_deploy.providers import SessionConfig, create_session, resolve_provider
from resnet_deploy.runners import input_dtype
from resnet_deploy.triton import (
    TritonOptions,
    build_config,
    model_name,
    resolve_batching,
    tensor_specs,
)

IMAGE_SUFFIX = "_image"
IMAGE_INPUT = "image"
IMAGE_OUTPUTS = ("classes", "class_indices", "probabilities", "error")
DEFAULT_MAX_QUEUE_SIZE = 128
DEFAULT_TOP_K = 5
SHM_DIR = Path("/dev/shm")
POLL_S = 0.2


PROXY_NOT_LISTENING = "ConnectionRefusedError"  # in Triton's "Model initialize error: ..."


class ServeError(ResnetDeployError):
    """The server could not start or stopped on its own; the message gives the cause."""


@dataclass(frozen=True)
class ServeOptions:
    name: str | None = None  # None: as `triton` names it (metadata's arch, else the file's stem)
    provider: str = "cpu"
    host: str = "127.0.0.1"  # loopback unless another address is asked for
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch_size: int | None = None  # None: as `triton` (32, or 0 for a fixed-batch model)
    max_queue_delay_us: int = 100
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE  # requests waiting per model; 0: unbounded
    instances: int = 1  # model instances, each with its own ONNX Runtime session
    threads: int = 0  # intra-op threads per session; 0: ONNX Runtime's default
    top_k: int = DEFAULT_TOP_K  # classes the image model returns
    image_model: bool = True
    startup_timeout_s: float = 120.0
    # Triton's exit timeout: how long in-flight requests and open HTTP connections may hold
    # the shutdown (Triton's own default is 30 s, Kubernetes' whole grace period)
    drain_timeout_s: int = 20
    strict_placement: bool = False  # refuse to start when compute nodes land on the CPU


@dataclass(frozen=True)
class Endpoints:
    http_url: str
    grpc_url: str
    metrics_url: str
    model_name: str
    image_model_name: str | None  # None when the model has no resnet-deploy metadata


@dataclass
class ServeResult:
    model: Path
    endpoints: Endpoints
    provider: str
    max_batch_size: int
    max_queue_size: int
    instances: int
    startup_s: float
    uptime_s: float
    stopped_by: str  # "SIGINT", "SIGTERM", or why the server stopped on its own
    notes: list[str] = field(default_factory=list)


def check_options(options: ServeOptions) -> None:
    """Every check that needs no model and no server."""
    ports = {
        "--http-port": options.http_port,
        "--grpc-port": options.grpc_port,
        "--metrics-port": options.metrics_port,
    }
    for flag, port in ports.items():
        if not 1 <= port <= 65535:
            raise InputError(f"{flag} must be between 1 and 65535, got {port}")
    if len(set(ports.values())) != len(ports):
        raise InputError(f"the HTTP, gRPC and metrics ports must differ, got {ports}")
    if options.max_batch_size is not None and options.max_batch_size < 0:
        raise InputError(f"--max-batch-size must be 0 or more, got {options.max_batch_size}")
    if options.max_queue_delay_us < 0:
        raise InputError(
            f"--max-queue-delay-us must be 0 or more, got {options.max_queue_delay_us}"
        )
    if options.max_queue_size < 0:
        raise InputError(f"--max-queue-size must be 0 or more, got {options.max_queue_size}")
    if options.instances < 1:
        raise InputError(f"--instances must be at least 1, got {options.instances}")
    if options.threads < 0:
        raise InputError(f"--threads must be 0 or more, got {options.threads}")
    if options.drain_timeout_s < 1:
        raise InputError(f"--drain-timeout-s must be at least 1, got {options.drain_timeout_s}")
    if not 1 <= options.top_k <= len(imagenet_classes()):
        raise InputError(f"--top must be between 1 and {len(imagenet_classes())}")
    resolve_provider(options.provider)


@dataclass(frozen=True)
class ServedModel:
    """What Triton is told about one model, derived from `triton`'s ModelConfig."""

    config: mc.ModelConfig
    metadata: ModelMetadata | None
    fixed_batch: int | None  # the ONNX batch when it is not dynamic
    warnings: tuple[str, ...] = ()  # e.g. an int8 file made for CPUs with VNNI


def served_model(model_path: Path, options: ServeOptions) -> ServedModel:
    """The config `triton` would write for this file, with serve's batching options."""
    model = load_onnx(model_path)
    metadata = read_metadata(model, model_path)
    provider = resolve_provider(options.provider)
    warnings = require_target(model, metadata, provider, name=str(model_path))  # or refuses
    name = model_name(model_path, metadata, options.name)
    inputs, outputs = tensor_specs(model)
    triton_options = TritonOptions(
        repo=Path("."),
        max_batch_size=options.max_batch_size,
        max_queue_delay_us=options.max_queue_delay_us,
        instances=options.instances,
        kind="cpu",
        warmup=False,
    )
    max_batch, preferred = resolve_batching(triton_options, inputs, outputs)
    config = build_config(name, inputs, outputs, triton_options, max_batch, preferred, set())
    first = inputs[0].shape[0] if inputs and inputs[0].shape else -1
    return ServedModel(config, metadata, None if first == -1 else first, tuple(warnings))


def np_dtype(data_type: int) -> type:
    """The numpy type of a Triton data type (``TYPE_FP32`` -> float32)."""
    return triton_to_np_dtype(mc.DataType.Name(data_type).removeprefix("TYPE_"))


class ModelServer:
    """Triton with the model (and its image model) loaded; ``stop`` drains and cleans up.

    Used as a context manager, or ``start`` then ``stop``. ``start`` returns only once both
    models answer ready, or raises a ServeError with the cause.
    """

    def __init__(self, model_path: Path, options: ServeOptions = ServeOptions()) -> None:
        check_options(options)
        self.model_path = Path(model_path)
        self.options = options
        self.served = served_model(self.model_path, options)
        self.notes: list[str] = list(self.served.warnings)
        self.startup_s = 0.0
        self._triton: Any = None
        self._folder: Path | None = None
        self._saved_library_path: str | None = None
        self._started_at = 0.0
        self._stopped = threading.Event()

    @property
    def name(self) -> str:
        return self.served.config.name

    @property
    def endpoints(self) -> Endpoints:
        host = self.options.host
        host = f"[{host}]" if ":" in host else host
        image = self.name + IMAGE_SUFFIX if self._serves_images() else None
        return Endpoints(
            http_url=f"http://{host}:{self.options.http_port}",
            grpc_url=f"grpc://{host}:{self.options.grpc_port}",
            metrics_url=f"http://{host}:{self.options.metrics_port}/metrics",
            model_name=self.name,
            image_model_name=image,
        )

    def _serves_images(self) -> bool:
        return self.options.image_model and self.served.metadata is not None

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(
        self,
        progress: Callable[[str], None] = lambda step: None,
        cancel: threading.Event | None = None,
    ) -> Endpoints:
        """Start and wait for readiness; ``cancel`` set meanwhile stops it (KeyboardInterrupt)."""
        started = time.perf_counter()
        if importlib.util.find_spec("pytriton") is None:
            raise ServeError(
                "serve needs PyTriton, which is not installed: pip install 'resnet-deploy[serve]' "
                "(Linux x86_64 or aarch64 only)"
            )
        check_ports_free(self.options)
        progress(f"start {self.options.instances} ONNX Runtime session(s)")
        session_config = SessionConfig(
            provider=self.options.provider,
            intra_op_threads=self.options.threads,
            strict_placement=self.options.strict_placement,
        )
        sessions = [
            create_session(self.model_path, session_config) for _ in range(self.options.instances)
        ]
        self.notes.append(sessions[0].placement.summary())
        self.notes += check_placement(sessions[0].placement, strict=False)
        if self.options.image_model and self.served.metadata is None:
            self.notes.append(
                f"{self.model_path} has no resnet-deploy metadata: no image model, since its "
                "preprocessing is unknown"
            )
        progress("start tritonserver")
        self._folder = Path(tempfile.mkdtemp(prefix="resnet-deploy-serve-"))
        self._saved_library_path = put_libpython_first()
        try:
            self._triton = self._bind(sessions)
            self._run_until_ready(progress, cancel or threading.Event())
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - started
        self._started_at = time.perf_counter()
        return self.endpoints

    def _bind(self, sessions: list[ort.InferenceSession]) -> Any:
        from pytriton.model_config import DynamicBatcher, ModelConfig, QueuePolicy, Tensor
        from pytriton.triton import Triton, TritonConfig

        logging.getLogger("pytriton").setLevel(logging.ERROR)  # Triton's log file has the story
        options = self.options
        assert self._folder is not None
        triton = Triton(
            workspace=self._folder / "pytriton",  # removed with our folder, however stop ends
            config=TritonConfig(
                http_address=options.host,
                http_port=options.http_port,
                grpc_address=options.host,
                grpc_port=options.grpc_port,
                metrics_address=options.host,
                metrics_port=options.metrics_port,
                allow_gpu_metrics=False,
                exit_timeout_secs=options.drain_timeout_s,
                log_file=self.log_file,
                log_verbose=0,
            ),
        )
        config = self.served.config
        batching = config.max_batch_size > 0
        queue = QueuePolicy(max_queue_size=options.max_queue_size)
        batcher = DynamicBatcher(
            max_queue_delay_microseconds=config.dynamic_batching.max_queue_delay_microseconds,
            preferred_batch_size=list(config.dynamic_batching.preferred_batch_size) or None,
            default_queue_policy=queue,
        )
        triton.bind(
            model_name=config.name,
            infer_func=[tensor_function(s) for s in sessions],
            inputs=[
                Tensor(name=t.name, dtype=np_dtype(t.data_type), shape=tuple(t.dims))
                for t in config.input
            ],
            outputs=[
                Tensor(name=t.name, dtype=np_dtype(t.data_type), shape=tuple(t.dims))
                for t in config.output
            ],
            config=ModelConfig(
                batching=batching, max_batch_size=max(config.max_batch_size, 1), batcher=batcher
            ),
        )
        if self._serves_images():
            image_batch = config.max_batch_size or self.served.fixed_batch or 1
            k = options.top_k
            triton.bind(
                model_name=config.name + IMAGE_SUFFIX,
                infer_func=[
                    image_function(s, self.served.metadata, k, self.served.fixed_batch, image_batch)
                    for s in sessions
                ],
                inputs=[Tensor(name=IMAGE_INPUT, dtype=np.bytes_, shape=(1,))],
                outputs=[
                    Tensor(name="classes", dtype=np.bytes_, shape=(k,)),
                    Tensor(name="class_indices", dtype=np.int64, shape=(k,)),
                    Tensor(name="probabilities", dtype=np.float32, shape=(k,)),
                    Tensor(name="error", dtype=np.bytes_, shape=(1,)),
                ],
                config=ModelConfig(
                    max_batch_size=image_batch,
                    batcher=DynamicBatcher(
                        max_queue_delay_microseconds=options.max_queue_delay_us,
                        default_queue_policy=queue,
                    ),
                ),
            )
        return triton

    @property
    def log_file(self) -> Path:
        assert self._folder is not None
        return self._folder / "tritonserver.log"

    def _run_until_ready(self, progress: Callable[[str], None], cancel: threading.Event) -> None:
        """``Triton.run`` in a thread, watched: a dead tritonserver or a failed load ends the wait.

        PyTriton's own wait polls a dead server for two minutes; this one stops as soon as the
        process is gone or the models' load has failed.
        """
        failure: list[BaseException] = []
        started = threading.Event()

        def run() -> None:
            try:
                self._triton.run()
            except BaseException as exc:
                failure.append(exc)
            started.set()
            # tritonserver gets SIGTERM when the thread that forked it ends (PR_SET_PDEATHSIG
            # is per thread), so this thread lives until the server is stopped.
            self._stopped.wait()

        thread = threading.Thread(target=run, name="triton-start", daemon=True)
        thread.start()
        deadline = time.monotonic() + self.options.startup_timeout_s
        names = [self.name] + ([self.name + IMAGE_SUFFIX] if self._serves_images() else [])
        seen_server = False
        while True:
            if cancel.is_set():
                raise KeyboardInterrupt  # a signal before the models were ready
            if failure:
                raise ServeError(self._cause(f"models failed to load ({failure[0]})"))
            alive = bool(tritonserver_pids())
            seen_server = seen_server or alive
            if seen_server and not alive:
                raise ServeError(self._cause("tritonserver exited during start"))
            if started.is_set() and all(model_ready(self.ready_url(n)) for n in names):
                progress(f"models ready: {', '.join(names)}")
                return
            if time.monotonic() > deadline:
                raise ServeError(
                    self._cause(f"models not ready after {self.options.startup_timeout_s:.0f} s")
                )
            time.sleep(POLL_S)

    def ready_url(self, name: str) -> str:
        host = self.options.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.options.http_port}/v2/models/{name}/ready"

    def _cause(self, fallback: str) -> str:
        """The first error tritonserver logged, in one line, else ``fallback``."""
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return log_cause(text) or fallback

    def alive(self) -> bool:
        """tritonserver is running and the models still answer ready."""
        return bool(tritonserver_pids()) and model_ready(self.ready_url(self.name))

    def stop(self) -> None:
        """Drain and stop tritonserver, end PyTriton's handlers, remove what they left."""
        if self._triton is not None:
            triton, self._triton = self._triton, None
            # SIGINT to tritonserver: it stops taking requests, finishes those in flight and
            # exits; then PyTriton ends its handlers. If tritonserver died while starting,
            # PyTriton's start thread holds the lock stop() needs while it polls the dead server
            # for two minutes: what it would clean up is removed below instead of waited for.
            alive = bool(tritonserver_pids())
            stopper = threading.Thread(target=triton.stop, name="triton-stop", daemon=True)
            stopper.start()
            stopper.join(self.options.drain_timeout_s + 45 if alive else 5)
        self._stopped.set()
        remove_shared_memory(os.getpid())
        if self._saved_library_path is not None:
            restore_library_path(self._saved_library_path)
            self._saved_library_path = None
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    @property
    def uptime_s(self) -> float:
        return time.perf_counter() - self._started_at if self._started_at else 0.0


def tensor_function(session: ort.InferenceSession) -> Callable:
    """Triton's batch of the model's own tensors, run as one ONNX Runtime call."""
    from pytriton.decorators import batch

    output_names = [o.name for o in session.get_outputs()]

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(output_names, session.run(output_names, inputs), strict=True))

    return infer


def image_function(
    session: ort.InferenceSession,
    metadata: ModelMetadata,
    k: int,
    fixed_batch: int | None,
    max_rows: int,
) -> Callable:
    """Encoded images -> preprocessing -> the model -> top-k; a bad row gets an ``error``."""
    from pytriton.decorators import batch

    dtype = input_dtype(session)

    @batch
    def infer(image: np.ndarray) -> dict[str, np.ndarray]:
        rows = len(image)
        errors = np.full((rows, 1), b"", dtype=object)
        arrays, good = [], []
        for row, data in enumerate(image[:, 0]):
            try:
                arrays.append(decode_image(bytes(data), metadata))
                good.append(row)
            except InputError as exc:
                errors[row, 0] = str(exc).encode()
        classes = np.full((rows, k), b"", dtype=object)
        indices = np.zeros((rows, k), np.int64)
        probabilities = np.zeros((rows, k), np.float32)
        if good:
            logits = run_rows(
                session, metadata, np.stack(arrays).astype(dtype), fixed_batch, max_rows
            )
            for row, scores in zip(good, softmax(logits), strict=True):
                best = top_k(scores, k)
                classes[row] = [score.class_name.encode() for score in best]
                indices[row] = [score.class_index for score in best]
                probabilities[row] = [score.probability for score in best]
        return {
            "classes": classes,
            "class_indices": indices,
            "probabilities": probabilities,
            "error": errors,
        }

    return infer


def decode_image(data: bytes, metadata: ModelMetadata) -> np.ndarray:
    """One encoded image as the model's input row, with the preprocessing it was exported with."""
    if not data:
        raise InputError("image: empty payload, expected encoded image bytes (JPEG, PNG, ...)")
    try:
        image = open_rgb(io.BytesIO(data), "image")
    except InputError as exc:
        # Pillow names the buffer object in its message; say what the client sent instead.
        message = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc))
        raise InputError(f"{message} ({len(data)} bytes, first {data[:8]!r})") from None
    return preprocess(image, metadata.image_size, metadata.mean, metadata.std)


def run_rows(
    session: ort.InferenceSession,
    metadata: ModelMetadata,
    rows: np.ndarray,
    fixed_batch: int | None,
    max_rows: int,
) -> np.ndarray:
    """Logits for every row, in runs the model accepts (a fixed batch is padded with zeros)."""
    size = fixed_batch or max_rows
    results = []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        if fixed_batch and len(chunk) < fixed_batch:
            filler = np.zeros((fixed_batch - len(chunk), *chunk.shape[1:]), chunk.dtype)
            padded = np.concatenate([chunk, filler])
        else:
            padded = chunk
        logits = session.run([metadata.output_name], {metadata.input_name: padded})[0]
        results.append(logits[: len(chunk)])
    return np.concatenate(results)


def serve(
    model_path: Path,
    options: ServeOptions = ServeOptions(),
    progress: Callable[[str], None] = lambda step: None,
    on_ready: Callable[[Endpoints, float], None] = lambda endpoints, startup_s: None,
) -> ServeResult:
    """Serve until SIGINT or SIGTERM (either drains), or until the server stops on its own."""
    stop = threading.Event()
    received: list[str] = []

    def handle(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    server = ModelServer(model_path, options)
    try:
        try:
            endpoints = server.start(progress, cancel=stop)
        except ServeError as error:
            if PROXY_NOT_LISTENING not in str(error):
                raise
            # Seen once in four full test runs: an instance's Python stub reached PyTriton's
            # model proxy before it listened. Not the user's doing; one clean retry.
            progress(f"start failed ({error}); starting once more")
            server.stop()
            server = ModelServer(model_path, options)
            endpoints = server.start(progress, cancel=stop)
        on_ready(endpoints, server.startup_s)
        stopped_by = ""
        while not stop.wait(1.0):
            if not server.alive():
                stopped_by = "tritonserver stopped on its own: " + server._cause("no cause logged")
                break
        if received:
            stopped_by = received[0]
            progress(f"{stopped_by}: draining in-flight requests, then stopping tritonserver")
        uptime = server.uptime_s
    finally:
        server.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    result = ServeResult(
        model=Path(model_path),
        endpoints=endpoints,
        provider=resolve_provider(options.provider),
        max_batch_size=server.served.config.max_batch_size,
        max_queue_size=options.max_queue_size,
        instances=options.instances,
        startup_s=server.startup_s,
        uptime_s=uptime,
        stopped_by=stopped_by,
        notes=server.notes,
    )
    if not received:
        raise ServeError(stopped_by)
    return result


def check_ports_free(options: ServeOptions) -> None:
    """Refuse a port already taken now, with its flag, rather than after tritonserver fails."""
    flags = {
        options.http_port: "--http-port",
        options.grpc_port: "--grpc-port",
        options.metrics_port: "--metrics-port",
    }
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    for port, flag in flags.items():
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Triton binds
            try:
                probe.bind((options.host, port))
            except OSError as exc:
                if exc.errno == 98:  # EADDRINUSE
                    raise InputError(
                        f"port {port} on {options.host} is in use ({flag}); pick another"
                    ) from None
                raise InputError(
                    f"cannot listen on {options.host}:{port}: {exc.strerror}"
                ) from None


def put_libpython_first() -> str | None:
    """Prepend this interpreter's LIBDIR to LD_LIBRARY_PATH; return the value to restore.

    The Python-backend stub links ``libpython3.X.so`` by soname. Under pyenv or conda, the
    loader would otherwise find the system's library of another patch release, and the models
    fail to load with errors such as ``'_thread.RLock' object has no attribute
    '_recursion_count'``.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libdir:
        return None
    saved = os.environ.get("LD_LIBRARY_PATH", "")
    os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{saved}" if saved else libdir
    return saved


def restore_library_path(saved: str) -> None:
    if saved:
        os.environ["LD_LIBRARY_PATH"] = saved
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)


def model_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def tritonserver_pids(parent: int | None = None) -> list[int]:
    """The tritonserver processes this process started (read from /proc)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        if comm == "tritonserver" and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def shared_memory_segments(pid: int) -> list[Path]:
    """The Python backend's /dev/shm regions for a server started by process ``pid``."""
    if not SHM_DIR.is_dir():
        return []
    return sorted(SHM_DIR.glob(f"pytrtion{pid}-*"))


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


def format_endpoints(endpoints: Endpoints, startup_s: float) -> str:
    lines = [f"serving {endpoints.model_name} (ready in {startup_s:.1f} s)"]
    lines.append(f"  HTTP     {endpoints.http_url}/v2/models/{endpoints.model_name}")
    lines.append(f"  gRPC     {endpoints.grpc_url}")
    lines.append(f"  metrics  {endpoints.metrics_url}")
    if endpoints.image_model_name:
        lines.append(f"  images   {endpoints.http_url}/v2/models/{endpoints.image_model_name}")
    lines.append("Stop with Ctrl-C or SIGTERM (in-flight requests finish first).")
    return "\n".join(lines)


def format_result(result: ServeResult) -> str:
    lines = [
        f"stopped by {result.stopped_by} after {result.uptime_s:.1f} s; "
        "tritonserver exited and its shared memory is gone"
    ]
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)
