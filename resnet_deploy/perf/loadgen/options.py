"""What a LoadGen run is asked to do, what it reports, and the checks made before any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from resnet_deploy.environment import Environment
from resnet_deploy.errors import InputError
from resnet_deploy.model.metadata import ModelMetadata
from resnet_deploy.perf.bench_options import BenchOptions, check_options, fields_set
from resnet_deploy.runtime.memory import check_fits
from resnet_deploy.serving.client import EndpointOptions, check_endpoint

SCENARIOS = {
    "singlestream": "SingleStream",
    "multistream": "MultiStream",
    "server": "Server",
    "offline": "Offline",
}
MLPERF_MODEL = "resnet50"  # whose rules --official applies, from LoadGen's built-in mlperf.conf
QUICK_MIN_DURATION_S = 5.0
OFFICIAL_MIN_DURATION_S = 600.0
# Measured: a Server run at 1e6 QPS for 5 s (5 million scheduled queries) peaked at 2.2 GiB with
# a SUT that answers at once, 1e5 QPS at 171 MiB: about 450 bytes a query, rounded up.
LOADGEN_BYTES_PER_QUERY = 512
# The fewest queries with which LoadGen's early-stopping test can pass (LoadGen 6.0 names these
# in its summary when a run has fewer), so that a quick run long enough is VALID. Offline's
# minimum counts samples and LoadGen's own default (one query) is kept.
QUICK_MIN_QUERIES = {"SingleStream": 64, "MultiStream": 662, "Server": 459}
DEFAULT_LATENCY_BOUND_MS = 15.0  # MLPerf's Server p99 bound for ResNet50
DEFAULT_MAX_BATCH = {"SingleStream": 1, "MultiStream": 8, "Server": 8, "Offline": 32}
DEFAULT_BATCH_TIMEOUT_MS = 2.0
MULTISTREAM_SAMPLES = 8  # samples per MultiStream query, as MLPerf defines it
GENERATED_SAMPLES = {False: 64, True: 1024}  # quick, official (MLPerf's ResNet50 sample count)
PERFORMANCE_SAMPLES = 1024  # samples held in memory at once (MLPerf's for ResNet50)
CALIBRATION_S = 1.0  # timing before LoadGen starts, for defaults and its expected latencies
DEFAULT_SERVER_LOAD = 0.5  # no --target-qps: this fraction of the measured throughput
OVERLOAD_FACTOR = 4  # quick Server runs end when the backlog takes this many bounds to serve
MIN_OUTSTANDING = 64  # ... but never below this many outstanding queries (Poisson bursts)
DEFAULT_PEAK_STEPS = 6
MAX_PEAK_STEP_S = 60.0  # --find-peak: no step that LoadGen's query count makes longer
PERCENTILE_FIELDS = {
    "50.00": "p50_ms",
    "90.00": "p90_ms",
    "95.00": "p95_ms",
    "97.00": "p97_ms",
    "99.00": "p99_ms",
    "99.90": "p99_9_ms",
}
# A served model batches on the server: Server and SingleStream send each sample as it comes.
REMOTE_MAX_BATCH = {"SingleStream": 1, "MultiStream": 8, "Server": 1, "Offline": 32}
REMOTE_CONCURRENCY = 16  # requests in flight to a served model unless --concurrency says


@dataclass(frozen=True)
class ScenarioOptions:
    scenario: str = "singlestream"
    engine: BenchOptions = field(default_factory=BenchOptions)  # provider, threads, ... as bench
    instances: int = 1  # in process: sessions sharing the queue, a worker thread each
    endpoint: EndpointOptions | None = None  # drive a served model instead of a session
    target_qps: float | None = None  # Server: Poisson arrival rate; Offline: expected samples/s
    latency_bound_ms: float | None = None  # Server p99 bound; None: 15 ms
    min_duration_s: float | None = None  # None: 5 s, or 600 s with official
    min_queries: int | None = None  # None: early stopping's minimum; Offline: samples
    samples: int | None = None  # generated inputs (64; 1024 official), or the most images used
    images: Path | None = None  # a folder of images; a class-index subfolder labels each one
    labels: Path | None = None  # "name index" lines, instead of class subfolders
    accuracy: bool = False  # LoadGen's AccuracyOnly mode: every sample once, top-1 reported
    max_batch: int | None = None  # None: 1, 8, 8, 32 for SingleStream, MultiStream, Server, Offline
    batch_timeout_ms: float | None = None  # Server: longest a sample waits for a batch to fill
    log_dir: Path | None = None  # keep LoadGen's logs here; None: a temporary folder, removed
    official: bool = False  # MLPerf's ResNet50 settings: 600 s, official query counts and bounds
    find_peak: bool = False  # Server: bisect the target QPS for the highest VALID one
    peak_steps: int = DEFAULT_PEAK_STEPS
    peak_budget_s: float | None = None  # find_peak: no step ends past it; None: 60 s a step
    force: bool = False  # overwrite LoadGen logs already in log_dir


@dataclass
class PeakStep:
    target_qps: float
    valid: bool
    samples_per_s: float | None
    p99_ms: float | None
    reason: str = ""  # the first reason it is INVALID


@dataclass
class ScenarioResult:
    """One LoadGen test as its logs report it; numbers are None where the scenario has none."""

    model: Path | None  # the model file: run in process, or read for preprocessing
    model_sha256: str  # "" without a file
    metadata: ModelMetadata | None  # None for a served model without its file
    provider: str  # ONNX Runtime's provider, or the server and protocol of an endpoint
    threads: int | None  # intra-op threads in process (of each instance); None for an endpoint
    input_dtype: str
    scenario: str  # LoadGen's name: SingleStream, MultiStream, Server, Offline
    mode: str  # PerformanceOnly or AccuracyOnly
    official: bool
    valid: bool
    invalid_reasons: list[str]
    samples_per_s: float | None  # Server: completed; Offline: as LoadGen states; else 1/mean
    latency_metric_ms: float | None  # SingleStream's p90, MultiStream's p99 per query
    latency_metric_percentile: float | None
    early_stopping_estimate_ms: float | None  # LoadGen's early-stopping percentile estimate
    target_qps: float | None
    latency_bound_ms: float | None
    samples_per_query: int | None
    queries: int | None
    min_ms: float | None = None  # latency of a sample (of a query in MultiStream)
    mean_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p97_ms: float | None = None
    p99_ms: float | None = None
    p99_9_ms: float | None = None
    max_ms: float | None = None
    min_duration_ms: int | None = None
    min_query_count: int | None = None
    instances: int | None = None  # in-process sessions serving the queue; None for an endpoint
    max_batch: int = 1
    batch_timeout_ms: float = 0.0
    mean_batch_size: float | None = None  # what the SUT's worker actually ran
    warmed_batch_sizes: list[int] = field(default_factory=list)  # run before LoadGen started
    engine_batch_sizes: list[int] = field(default_factory=list)  # shapes run during the test
    padded_batches: int = 0  # short batches padded to a warmed size, the padding's answers dropped
    endpoint: str | None = None  # a served model: its URL and name
    concurrency: int | None = None  # ... and the most requests in flight to it
    sample_source: str = ""
    sample_count: int = 0
    top1_accuracy: float | None = None
    accuracy_samples: int | None = None
    early_stopping: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)
    loadgen_errors: list[str] = field(default_factory=list)
    loadgen_warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    peak_search: list[PeakStep] = field(default_factory=list)
    peak_stopped: str = ""  # why the peak search ended before its last step
    log_dir: Path | None = None
    loadgen_version: str = ""
    environment: Environment | None = None


# The options that must be greater than 0 when given, and what each is
POSITIVE = {
    "target_qps": "the target QPS",
    "latency_bound_ms": "the latency bound",
    "min_duration_s": "the minimum duration",
    "min_queries": "the minimum query count",
    "samples": "the sample count",
    "max_batch": "the largest batch",
    "instances": "the instance count",
}


def check_scenario_options(options: ScenarioOptions) -> str:
    """Every cheap check before any work; returns LoadGen's name of the scenario."""
    scenario = SCENARIOS.get(options.scenario.strip().lower())
    if scenario is None:
        raise InputError(
            f"unknown scenario {options.scenario!r}; use {', '.join(SCENARIOS)}",
            options=["scenario"],
        )
    check_options(options.engine)
    engine = options.engine
    latency_loop = fields_set(
        engine, "batch_sizes", "warmup_runs", "warmup_s", "iterations", "duration_s"
    )
    if latency_loop:
        raise InputError(
            "batch sizes, warm-up, iterations and duration belong to the latency loop; a LoadGen "
            "scenario takes a largest batch and a minimum duration",
            options=latency_loop,
        )
    if engine.cuda_graph:
        raise InputError(
            "a CUDA graph needs one fixed shape; LoadGen's batches vary in size",
            options=["cuda_graph"],
        )
    for name, concept in POSITIVE.items():
        value = getattr(options, name)
        if value is not None and not value > 0:
            raise InputError(f"{concept} must be greater than 0, got {value}", options=[name])
    if options.batch_timeout_ms is not None and not options.batch_timeout_ms >= 0:
        raise InputError(
            f"the batch timeout cannot be negative, got {options.batch_timeout_ms}",
            options=["batch_timeout_ms"],
        )
    if options.official:
        _check_official(options)
    if options.find_peak:
        if scenario != "Server":
            raise InputError(
                "the peak search looks for Server's highest target QPS: use the server scenario",
                options=["find_peak", "scenario"],
            )
        if options.accuracy:
            raise InputError(
                "the peak search measures performance; run the accuracy mode separately",
                options=["find_peak", "accuracy"],
            )
        if not 1 <= options.peak_steps <= 20:
            raise InputError(
                f"the peak search takes 1 to 20 steps, got {options.peak_steps}",
                options=["peak_steps"],
            )
    if options.accuracy and options.images is None:
        raise InputError(
            "the accuracy mode needs a labelled image folder", options=["accuracy", "images"]
        )
    if options.labels is not None and options.images is None:
        raise InputError(
            "a labels file labels the images of an image folder; give that folder too",
            options=["labels", "images"],
        )
    if options.images is not None and not Path(options.images).is_dir():
        raise InputError(f"{options.images}: not a folder of images", options=["images"])
    if options.labels is not None and not Path(options.labels).is_file():
        raise InputError(f"{options.labels}: labels file not found", options=["labels"])
    if options.endpoint is not None:
        check_endpoint(options.endpoint)
        if options.batch_timeout_ms is not None:
            raise InputError(
                "the batch timeout is the in-process batcher's; a server batches itself",
                options=["batch_timeout_ms"],
            )
        if options.instances != 1:
            raise InputError(
                "instances are the in-process system's; a server runs its own",
                options=["instances"],
            )
    if options.log_dir is not None:
        _check_log_dir(Path(options.log_dir), options.force)
    _check_schedule_fits(scenario, options)
    return scenario


def _check_official(options: ScenarioOptions) -> None:
    """MLPerf's official settings fix the duration, query count and latency bound."""
    fixed = fields_set(options, "min_duration_s", "min_queries", "latency_bound_ms")
    if fixed:
        raise InputError(
            "MLPerf's official settings fix the duration, query count and latency bound; "
            "leave them out",
            options=["official", *fixed],
        )


def _check_log_dir(log_dir: Path, force: bool) -> None:
    if log_dir.exists() and not log_dir.is_dir():
        raise InputError(f"{log_dir}: LoadGen's log folder is a file", options=["log_dir"])
    if not log_dir.parent.is_dir():
        raise InputError(f"{log_dir}: its parent folder does not exist", options=["log_dir"])
    earlier = [*log_dir.glob("mlperf_log_*"), *log_dir.glob("step-*")]
    if earlier and not force:
        raise InputError(
            f"{log_dir}: holds LoadGen logs already (pass --force to overwrite)",
            options=["log_dir"],
        )


def _check_schedule_fits(scenario: str, options: ScenarioOptions) -> None:
    """LoadGen lays out a whole Server run's arrivals (and an Offline query's samples) before the
    first one is issued, so an absurd target fills memory before any verdict can come."""
    if scenario not in ("Server", "Offline") or options.target_qps is None:
        return
    duration_s = options.min_duration_s or (
        OFFICIAL_MIN_DURATION_S if options.official else QUICK_MIN_DURATION_S
    )
    queries = options.target_qps * duration_s
    check_fits(
        round(queries * LOADGEN_BYTES_PER_QUERY),
        f"LoadGen's schedule of {queries:.3g} queries ({options.target_qps:g}/s for "
        f"{duration_s:g} s)",
        advice="lower the target QPS or the minimum duration",
        options=fields_set(options, "target_qps", "min_duration_s"),
    )
