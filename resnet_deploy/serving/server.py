"""`serve`: the model behind a real Triton Inference Server.

NVIDIA's own ``tritonserver`` (the build the ``nvidia-pytriton`` wheel ships, with its Python
backend) runs as a child process on a model repository written for the run. Each model instance
is a Python-backend stub process holding its own ONNX Runtime session (``serving.backend``), so
clients speak KServe v2 (HTTP and gRPC) to the same scheduler, dynamic batcher, queue policy and
error handling that a production Triton has, and a batch reaches ONNX Runtime through the stub's
shared memory alone. PyTriton's own way, binding a function in this process behind a proxy, cost
about 7 ms more a request on this project's 2-core CPU, more than the whole serving budget.

Two models are served:

- ``<name>``: the ONNX model's own tensors, with the name, data types and dims that `triton`
  writes for the same file (both come from ``serving.config.build_config``), so one client works
  against this server and against a Triton serving the repository.
- ``<name>_image``: encoded image bytes in (one image a batch row), the model's recorded
  preprocessing done in the stub, the top-k class names and probabilities out, and an ``error``
  output a row: empty when the image was classified, else the reason, so one client's bad file
  does not fail the rows batched with it.

The model file is read once, when the server is made, and that one ModelFile gives the config,
the int8 target check and the ONNX Runtime session checked before Triton starts (the stubs, in
their own processes, read it again). The tritonserver process itself (its build, environment,
log and shared memory) is ``serving.process``. ``/v2/health/ready`` answers before the models
are loaded, so readiness is each model's own endpoint, and then the canary (``serving.canary``):
`serve` says ready only once every endpoint answered as in-process ONNX Runtime does. Both
SIGINT and SIGTERM end in the same drain: Triton stops taking requests, finishes those in
flight, then exits.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from resnet_deploy.errors import InputError, NumericsError
from resnet_deploy.model.labels import imagenet_classes
from resnet_deploy.model.metadata import ModelMetadata
from resnet_deploy.model.onnxfile import ModelFile, read_model
from resnet_deploy.runtime.int8target import require_target
from resnet_deploy.runtime.names import SPINNING
from resnet_deploy.runtime.placement import check_placement
from resnet_deploy.runtime.providers import SessionConfig, create_session, resolve_provider
from resnet_deploy.serving.backend import (
    IMAGE_INPUT,
    IMAGE_OUTPUTS,
    INSTANCE_FILE,
    imported_packages,
)
from resnet_deploy.serving.canary import CanaryReport, run_canary
from resnet_deploy.serving.config import (
    LABELS_FILE,
    TritonOptions,
    build_config,
    labelled_outputs,
    labels_file_text,
    model_name,
    render_config,
    resolve_batching,
    tensor_specs,
)
from resnet_deploy.serving.front import HttpFront
from resnet_deploy.serving.process import (
    BACKEND_STUB_SOURCE,
    Listen,
    ServeError,
    ServerFailure,
    Stub,
    check_ports_free,
    check_stub_numpy,
    end_process_group,
    free_loopback_ports,
    group_stubs,
    how_it_ended,
    launch_tritonserver,
    log_cause,
    model_ready,
    remove_shared_memory,
    serve_folder_prefix,
    sweep_leftovers,
    tritonserver_files,
    url_host,
)
from resnet_deploy.steps import Progress, no_progress

IMAGE_SUFFIX = "_image"
DEFAULT_MAX_QUEUE_SIZE = 128
DEFAULT_TOP_K = 5
POLL_S = 0.2
WATCH_S = 1.0  # how often a running server's processes are looked at
EXPOSED = (
    "inference, model metadata and metrics are open to the network without authentication; "
    "put an authenticating proxy in front, or listen on 127.0.0.1"
)
STOP_MARGIN_S = 30.0  # beyond the drain: unloading the models and their stubs


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
    # ONNX Runtime's idle threads spin by default; in a server that keeps Triton's own threads
    # off the cores, and Triton's dynamic batcher with a bounded queue then often misses the
    # moment its instance is free again and sleeps its 500 ms timeout (see the README)
    spin: bool = False
    top_k: int = DEFAULT_TOP_K  # classes the image model returns
    image_model: bool = True
    startup_timeout_s: float = 120.0
    # Triton's exit timeout: how long in-flight requests and open HTTP connections may hold
    # the shutdown (Triton's own default is 30 s, Kubernetes' whole grace period)
    drain_timeout_s: int = 20
    strict_placement: bool = False  # refuse to start when compute nodes land on the CPU

    @property
    def listen(self) -> Listen:
        return Listen(self.host, self.http_port, self.grpc_port, self.metrics_port)


@dataclass(frozen=True)
class Endpoints:
    http_url: str
    grpc_url: str
    metrics_url: str
    model_name: str
    image_model_name: str | None  # None when the model has no resnet-deploy metadata


class CanaryError(ServeError):
    """The served model answered the canary differently from in-process ONNX Runtime."""

    exit_code = NumericsError.exit_code  # the numbers disagree

    def __init__(self, report: CanaryReport):
        super().__init__(
            "the served model answers differently from in-process ONNX Runtime, so serve "
            "stopped it: " + "; ".join(report.failures())
        )
        self.report = report


@dataclass
class ServeResult:
    model: Path
    endpoints: Endpoints
    canary: CanaryReport
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
    ports = options.listen.ports
    for option, port in ports.items():
        if not 1 <= port <= 65535:
            raise InputError(f"ports must be between 1 and 65535, got {port}", options=[option])
    if len(set(ports.values())) != len(ports):
        raise InputError(
            f"the HTTP, gRPC and metrics ports must differ, got {ports}", options=list(ports)
        )
    if options.max_batch_size is not None and options.max_batch_size < 0:
        raise InputError(f"max batch size must be 0 or more, got {options.max_batch_size}")
    if options.max_queue_delay_us < 0:
        raise InputError(
            f"max queue delay must be 0 or more microseconds, got {options.max_queue_delay_us}"
        )
    if options.max_queue_size < 0:
        raise InputError(
            f"the queue bound must be 0 or more requests, got {options.max_queue_size}",
            options=["max_queue_size"],
        )
    if options.instances < 1:
        raise InputError(
            f"instances must be at least 1, got {options.instances}", options=["instances"]
        )
    if options.threads < 0:
        raise InputError(f"threads per session must be 0 or more, got {options.threads}")
    if options.drain_timeout_s < 1:
        raise InputError(f"drain timeout must be at least 1 s, got {options.drain_timeout_s}")
    if not 1 <= options.top_k <= len(imagenet_classes()):
        raise InputError(
            f"top-k must be between 1 and {len(imagenet_classes())} classes", options=["top_k"]
        )
    resolve_provider(options.provider)


@dataclass(frozen=True)
class ServedModel:
    """What Triton is told about one model, derived from `triton`'s ModelConfig."""

    config: mc.ModelConfig
    metadata: ModelMetadata | None
    fixed_batch: int | None  # the ONNX batch when it is not dynamic
    warnings: tuple[str, ...] = ()  # e.g. an int8 file made for CPUs with VNNI


def served_model(model_file: ModelFile, options: ServeOptions) -> ServedModel:
    """The config `triton` would write for this file, with serve's batching options."""
    model, metadata = model_file.proto, model_file.metadata
    provider = resolve_provider(options.provider)
    warnings = require_target(model, metadata, provider, name=str(model_file.path))  # or refuses
    name = model_name(model_file.path, metadata, options.name)
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
    labelled = labelled_outputs(outputs)
    config = build_config(name, inputs, outputs, triton_options, max_batch, preferred, labelled)
    first = inputs[0].shape[0] if inputs and inputs[0].shape else -1
    return ServedModel(config, metadata, None if first == -1 else first, tuple(warnings))


class ModelServer:
    """Triton with the model (and its image model) loaded; ``stop`` drains and cleans up.

    Used as a context manager, or ``start`` then ``stop``. ``start`` returns only once both
    models answer ready, or raises a ServeError with the cause.
    """

    def __init__(self, model: ModelFile | Path, options: ServeOptions = ServeOptions()) -> None:
        check_options(options)  # before the file: a bad option fails without reading 100 MB
        self.model_file = model if isinstance(model, ModelFile) else read_model(Path(model))
        self.model_path = self.model_file.path.resolve()  # the stubs run in other folders
        self.options = options
        self.served = served_model(self.model_file, options)
        self.notes: list[str] = list(self.served.warnings)
        if not loopback(options.host):
            self.notes.append(EXPOSED)
        self.startup_s = 0.0
        self.canary: CanaryReport | None = None  # once started: what the endpoints answered
        self._stubs: list[Stub] = []  # the model instances' processes, once started
        self._front: HttpFront | None = None  # the HTTP port clients use (serving.front)
        self._process: subprocess.Popen | None = None
        self._folder: Path | None = None
        self._started_at = 0.0

    @property
    def name(self) -> str:
        return self.served.config.name

    @property
    def endpoints(self) -> Endpoints:
        host = url_host(self.options.host)
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
        progress: Progress = no_progress,
        cancel: threading.Event | None = None,
    ) -> Endpoints:
        """Start, wait for readiness, and prove the answers right; ``cancel`` set meanwhile stops
        it (KeyboardInterrupt). A canary that disagrees stops the server (CanaryError)."""
        started = time.perf_counter()
        engine = tritonserver_files()
        check_stub_numpy()
        check_ports_free(self.options.listen)
        # One session here first: a file ONNX Runtime cannot load or a provider that is not
        # there is the user's one-line error now, not a traceback in Triton's log later.
        progress("check the model loads in ONNX Runtime")
        session = create_session(self.model_file, self._session_config())
        self.notes.append(session.placement.summary())
        self.notes += check_placement(session.placement, strict=False)
        if self.options.image_model and self.served.metadata is None:
            self.notes.append(
                f"{self.model_path} has no resnet-deploy metadata: no image model, since its "
                "preprocessing is unknown"
            )
        self.notes += sweep_leftovers()
        self._folder = Path(tempfile.mkdtemp(prefix=serve_folder_prefix(os.getpid())))
        try:
            repository = self.write_repository(self._folder / "models")
            progress(f"start tritonserver ({self.options.instances} instance(s) a model)")
            (upstream,) = free_loopback_ports(1)
            self._process = launch_tritonserver(
                engine,
                repository,
                self.options.listen,
                upstream,
                exit_timeout_s=self.options.drain_timeout_s,
                folder=self._folder,
                log_file=self.log_file,
            )
            self._front = HttpFront(self.options.host, self.options.http_port, upstream)
            self._front.start()
            self._wait_until_ready(progress, cancel or threading.Event())
            progress("canary: known inputs through every endpoint, against this session")
            self.canary = run_canary(
                session,
                self.served.metadata,
                {"http": self._local_url("http"), "grpc": self._local_url("grpc")},
                self.name,
                self.served.config.max_batch_size,
                self.endpoints.image_model_name,
                self.options.top_k,
            )
            if not self.canary.passed:
                raise CanaryError(self.canary)
            self._stubs = group_stubs(self._process.pid)
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt  # a signal during the canary
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - started
        self._started_at = time.perf_counter()
        return self.endpoints

    def _session_config(self) -> SessionConfig:
        return SessionConfig(
            provider=self.options.provider,
            intra_op_threads=self.options.threads,
            session_config_entries={SPINNING: "1" if self.options.spin else "0"},
            strict_placement=self.options.strict_placement,
        )

    def write_repository(self, repository: Path) -> Path:
        """The models as Triton's Python backend runs them (see serving.backend)."""
        options = self.options
        settings = {
            "model_path": str(self.model_path),
            "session": asdict(self._session_config()),
            "packages": imported_packages(),  # each instance checks its own
        }
        config = mc.ModelConfig()
        config.CopyFrom(self.served.config)
        config.ClearField("platform")
        config.backend = "python"
        if config.max_batch_size > 0:
            config.dynamic_batching.default_queue_policy.max_queue_size = options.max_queue_size
        models = [(config, {**settings, "kind": "tensor"})]
        if self._serves_images():
            models.append((self._image_config(), {**settings, **self._image_settings()}))
        for model_config, values in models:
            folder = repository / model_config.name
            (folder / "1").mkdir(parents=True)
            (folder / "1" / "model.py").write_text(BACKEND_STUB_SOURCE)
            # beside model.py, not in the config, which any client can read
            (folder / "1" / INSTANCE_FILE).write_text(json.dumps(values, indent=2))
            (folder / "config.pbtxt").write_text(render_config(model_config, str(self.model_path)))
            if any(output.label_filename for output in model_config.output):
                (folder / LABELS_FILE).write_text(labels_file_text())
        return repository

    def _image_config(self) -> mc.ModelConfig:
        k = self.options.top_k
        config = mc.ModelConfig(
            name=self.name + IMAGE_SUFFIX, backend="python", max_batch_size=self._image_rows()
        )
        config.input.add(name=IMAGE_INPUT, data_type=mc.TYPE_STRING, dims=[1])
        types = (mc.TYPE_STRING, mc.TYPE_INT64, mc.TYPE_FP32, mc.TYPE_STRING)
        widths = (k, k, k, 1)
        for name, data_type, width in zip(IMAGE_OUTPUTS, types, widths, strict=True):
            config.output.add(name=name, data_type=data_type, dims=[width])
        config.dynamic_batching.max_queue_delay_microseconds = self.options.max_queue_delay_us
        config.dynamic_batching.default_queue_policy.max_queue_size = self.options.max_queue_size
        config.instance_group.add(count=self.options.instances, kind=mc.ModelInstanceGroup.KIND_CPU)
        return config

    def _image_rows(self) -> int:
        return self.served.config.max_batch_size or self.served.fixed_batch or 1

    def _image_settings(self) -> dict[str, object]:
        return {
            "kind": "image",
            "top_k": self.options.top_k,
            "fixed_batch": self.served.fixed_batch or 0,
            "max_rows": self._image_rows(),
        }

    @property
    def log_file(self) -> Path:
        assert self._folder is not None
        return self._folder / "tritonserver.log"

    def _wait_until_ready(self, progress: Progress, cancel: threading.Event) -> None:
        """Until every model answers ready; a dead tritonserver ends the wait with its cause."""
        assert self._process is not None
        deadline = time.monotonic() + self.options.startup_timeout_s
        names = [self.name] + ([self.name + IMAGE_SUFFIX] if self._serves_images() else [])
        while True:
            if cancel.is_set():
                raise KeyboardInterrupt  # a signal before the models were ready
            if self._process.poll() is not None:
                raise ServeError(self._cause("tritonserver exited during start"))
            if all(model_ready(self.ready_url(n)) for n in names):
                progress(f"models ready: {', '.join(names)}")
                return
            if time.monotonic() > deadline:
                raise ServeError(
                    self._cause(f"models not ready after {self.options.startup_timeout_s:.0f} s")
                )
            time.sleep(POLL_S)

    def ready_url(self, name: str) -> str:
        return f"{self._local_url('http')}/v2/models/{name}/ready"

    def _local_url(self, protocol: str) -> str:
        """Where this machine reaches the server: a wildcard address by loopback."""
        host = self.options.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        host = url_host(host)
        port = self.options.http_port if protocol == "http" else self.options.grpc_port
        return f"{protocol}://{host}:{port}"

    def _cause(self, fallback: str) -> str:
        """The first error tritonserver logged, in one line, else ``fallback``."""
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return log_cause(text) or fallback

    def failure(self) -> str | None:
        """Why the server no longer serves every model, or None.

        tritonserver's process and each model instance's stub are watched, not the endpoints:
        watching adds nothing to the queues, and a killed stub left Triton answering every
        request with "Stub process ... is not healthy" while all its ready endpoints said 200.
        """
        if self._process is None:
            return "tritonserver is not running"
        code = self._process.poll()
        if code is not None:
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
            logged = self._cause("")
            return f"tritonserver {how}" + (f" ({logged})" if logged else "")
        for stub in self._stubs:
            ended = how_it_ended(stub.pid)
            if ended:
                return f"model {stub.model}'s instance (stub pid {stub.pid}) {ended}"
        return None

    def stop(self) -> None:
        """Drain and stop tritonserver, then remove what it left.

        SIGINT to tritonserver: it stops taking requests, finishes those in flight (for at
        most its exit timeout), unloads the models, whose stubs remove their shared memory,
        and exits. Only a server that outlives that is killed, and then any stub it left.
        """
        if self._process is not None:
            process, self._process = self._process, None
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(self.options.drain_timeout_s + STOP_MARGIN_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            end_process_group(process)
        if self._front is not None:  # after Triton's drain, which answers through it
            front, self._front = self._front, None
            front.stop()
        remove_shared_memory(os.getpid())
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    @property
    def uptime_s(self) -> float:
        return time.perf_counter() - self._started_at if self._started_at else 0.0


def serve(
    model: ModelFile | Path,
    options: ServeOptions = ServeOptions(),
    progress: Progress = no_progress,
    on_ready: Callable[[ModelServer], None] = lambda server: None,
) -> ServeResult:
    """Serve until SIGINT or SIGTERM (either drains), or until the server stops on its own."""
    stop = threading.Event()
    received: list[str] = []

    def handle(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    server = ModelServer(model, options)  # reads the file, once
    try:
        endpoints = server.start(progress, cancel=stop)
        on_ready(server)
        stopped_by = ""
        while not stop.wait(WATCH_S):
            failure = server.failure()
            if failure:
                stopped_by = failure
                progress(f"{failure}: stopping everything")
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
        model=server.model_file.path,
        endpoints=endpoints,
        canary=server.canary,
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
        raise ServerFailure(f"{stopped_by}; serve stopped the server and exits")
    return result


def format_ready(server: ModelServer) -> str:
    endpoints = server.endpoints
    lines = [f"serving {endpoints.model_name} (ready in {server.startup_s:.1f} s)"]
    lines.append(f"  HTTP     {endpoints.http_url}/v2/models/{endpoints.model_name}")
    lines.append(f"  gRPC     {endpoints.grpc_url}")
    lines.append(f"  metrics  {endpoints.metrics_url}")
    if endpoints.image_model_name:
        lines.append(f"  images   {endpoints.http_url}/v2/models/{endpoints.image_model_name}")
    if server.canary is not None:
        lines.append(server.canary.summary())
    if not loopback(server.options.host):
        lines.append(f"warning: {EXPOSED}")
    lines.append("Stop with Ctrl-C or SIGTERM (in-flight requests finish first).")
    return "\n".join(lines)


def loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (a name other than localhost counts as not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def format_result(result: ServeResult) -> str:
    lines = [
        f"stopped by {result.stopped_by} after {result.uptime_s:.1f} s; "
        "tritonserver exited and its shared memory is gone"
    ]
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)
