"""MLPerf LoadGen scenarios: LoadGen drives the load, our ONNX Runtime session answers it.

MLPerf Inference states ResNet50 deployment performance as LoadGen measures it: Poisson
arrivals in Server, one sample at a time in SingleStream, eight per query in MultiStream, one
huge query in Offline, and a VALID/INVALID verdict that includes an early-stopping test of
whether enough queries ran for the percentile to mean anything. So LoadGen itself issues every
query here; this module only supplies the two objects it asks for and reads its logs:

- a query sample library (QSL): preprocessed images from a folder, or generated inputs, held in
  memory between LoadGen's load and unload calls, so no file is read while the clock runs;
- a system under test (SUT): a queue served by one worker thread, which runs up to a maximum
  batch and waits at most a batch timeout (from the oldest sample's arrival) for a batch to fill.
  That is what lets Server meet its p99 bound under Poisson arrivals: a lone sample is not held
  back, a burst is served as one batch. Offline's one query goes through in large batches.

The verdict, throughput and percentiles come from LoadGen's own ``mlperf_log_summary.txt``;
LoadGen's errors come from ``mlperf_log_detail.txt``; top-1 accuracy from its
``mlperf_log_accuracy.json``, cross-checked against the responses the SUT sent.
"""

from __future__ import annotations

import math
import re
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.bench import (
    CUDA,
    TENSORRT,
    BenchOptions,
    check_options,
    session_config,
    summarize,
    time_runs,
)
from resnet_deploy.environment import Environment, describe_environment
from resnet_deploy.errors import InputError, ResnetDeployError
from resnet_deploy.images import list_images, load_image
from resnet_deploy.labels import NUM_IMAGENET_CLASSES
from resnet_deploy.metadata import ModelMetadata
from resnet_deploy.mlperf_logs import (
    Summary,
    parse_detail,
    parse_number,
    parse_summary,
    read_accuracy_log,
)
from resnet_deploy.onnxfile import load_with_metadata
from resnet_deploy.providers import create_session
from resnet_deploy.report import format_table
from resnet_deploy.runners import OrtRunner, input_dtype
from resnet_deploy.weights import sha256_of

SCENARIOS = {
    "singlestream": "SingleStream",
    "multistream": "MultiStream",
    "server": "Server",
    "offline": "Offline",
}
MLPERF_MODEL = "resnet50"  # whose rules --official applies, from LoadGen's built-in mlperf.conf
QUICK_MIN_DURATION_S = 5.0
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


@dataclass(frozen=True)
class ScenarioOptions:
    scenario: str = "singlestream"
    engine: BenchOptions = field(default_factory=BenchOptions)  # provider, threads, ... as bench
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

    model: Path
    model_sha256: str
    metadata: ModelMetadata
    provider: str
    threads: int
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
    max_batch: int = 1
    batch_timeout_ms: float = 0.0
    mean_batch_size: float | None = None  # what the SUT's worker actually ran
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
    log_dir: Path | None = None
    loadgen_version: str = ""
    environment: Environment | None = None


def read_labels(images: list[Path], folder: Path, labels: Path | None, classes: int) -> list[int]:
    """Each image's class: from ``labels`` ("name index" lines; name relative to the folder, or
    the bare file name, as in ImageNet's val_map.txt), else from a class-index subfolder."""
    table: dict[str, int] = {}
    if labels is not None:
        for number, line in enumerate(Path(labels).read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, _, index = line.strip().rpartition("\t" if "\t" in line else " ")
            if not name or not index.strip().isdigit():
                raise InputError(
                    f"{labels}:{number}: expected 'name<TAB>class index', got {line!r}"
                )
            table[name.strip()] = int(index)
    found = []
    for path in images:
        relative = path.relative_to(folder)
        if labels is not None:
            label = table.get(relative.as_posix(), table.get(path.name))
            where = f"{labels} has no line for {relative.as_posix()}"
        else:
            top = relative.parts[0] if len(relative.parts) > 1 else ""
            label = int(top) if top.isdigit() else None
            where = f"{path}: not in a class-index subfolder (0/, 1/, ...) and no --labels given"
        if label is None:
            raise InputError(f"accuracy needs a label for every image: {where}")
        if not 0 <= label < classes:
            raise InputError(f"{path}: class {label} is outside the model's 0..{classes - 1}")
        found.append(label)
    return found


class SampleLibrary:
    """LoadGen's QSL: model inputs, made on LoadGen's load call and dropped on its unload."""

    def __init__(
        self, metadata: ModelMetadata, dtype: np.dtype, images: list[Path] | None, count: int
    ):
        self.metadata = metadata
        self.dtype = dtype
        self.images = images
        self.count = count
        self.loaded: dict[int, np.ndarray] = {}

    def load(self, indices: list[int]) -> None:
        for index in indices:
            if index not in self.loaded:
                self.loaded[index] = self._make(index)

    def unload(self, indices: list[int]) -> None:
        for index in indices:
            self.loaded.pop(index, None)

    def batch(self, indices: list[int]) -> np.ndarray:
        return np.stack([self.loaded[i] for i in indices])

    def _make(self, index: int) -> np.ndarray:
        meta = self.metadata
        if self.images is None:
            shape = (3, meta.image_size, meta.image_size)
            array = np.random.default_rng(index).standard_normal(shape, dtype=np.float32)
        else:
            array = load_image(self.images[index], meta.image_size, meta.mean, meta.std)
        return array.astype(self.dtype, copy=False)


class BatchingSut:
    """LoadGen's SUT: samples queue up; one worker runs up to ``max_batch`` of them at once,
    waiting at most ``timeout_s`` after the oldest one arrived for more to join it."""

    def __init__(
        self,
        lg: Any,
        runner: OrtRunner,
        library: SampleLibrary,
        *,
        max_batch: int,
        timeout_s: float,
        fixed_batch: int | None,
    ):
        self.lg = lg
        self.runner = runner
        self.library = library
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self.fixed_batch = fixed_batch
        self.pending: deque[tuple[Any, float]] = deque()
        self.ready = threading.Condition()
        self.closed = False
        self.batches = 0
        self.samples = 0
        self.predictions: dict[int, int] = {}
        self.error: str | None = None
        self.worker = threading.Thread(target=self._serve, name="sut-worker", daemon=True)

    def issue_queries(self, samples: list[Any]) -> None:
        arrived = time.monotonic()
        with self.ready:  # a query's samples arrive together, so MultiStream's 8 stay one batch
            self.pending.extend((sample, arrived) for sample in samples)
            self.ready.notify()

    def flush_queries(self) -> None:
        """Nothing to do: no sample waits longer than the batch timeout anyway."""

    @contextmanager
    def serving(self) -> Iterator[BatchingSut]:
        self.worker.start()
        try:
            yield self
        finally:
            with self.ready:
                self.closed = True
                self.ready.notify()
            self.worker.join()

    def _serve(self) -> None:
        while True:
            with self.ready:
                while not self.pending and not self.closed:
                    self.ready.wait()
                if not self.pending:
                    return
                deadline = self.pending[0][1] + self.timeout_s
                while len(self.pending) < self.max_batch and not self.closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self.ready.wait(remaining)
                taken = min(self.max_batch, len(self.pending))
                batch = [self.pending.popleft()[0] for _ in range(taken)]
            self._run(batch)

    def _run(self, batch: list[Any]) -> None:
        indices = [sample.index for sample in batch]
        try:
            array = self.library.batch(indices)
            if self.fixed_batch is not None and len(array) < self.fixed_batch:
                pad = np.repeat(array[-1:], self.fixed_batch - len(array), axis=0)
                array = np.concatenate([array, pad])
            logits = self.runner.infer(self.runner.place(array))[0]
            logits = logits if isinstance(logits, np.ndarray) else logits.numpy()
            top1 = np.ascontiguousarray(logits[: len(batch)].argmax(axis=1), dtype=np.int32)
        except Exception as exc:  # LoadGen waits forever for unanswered samples: answer them
            self.error = self.error or f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            self.lg.QuerySamplesComplete([self.lg.QuerySampleResponse(s.id, 0, 0) for s in batch])
            return
        pointer = top1.ctypes.data
        responses = [
            self.lg.QuerySampleResponse(sample.id, pointer + 4 * i, 4)
            for i, sample in enumerate(batch)
        ]
        self.predictions.update(zip(indices, top1.tolist(), strict=True))
        self.batches += 1
        self.samples += len(batch)
        self.lg.QuerySamplesComplete(responses)  # copies the data while top1 is alive


@dataclass
class _Prepared:
    """What every LoadGen test of one call shares: session, samples and measured speeds."""

    lg: Any
    path: Path
    metadata: ModelMetadata
    provider: str
    threads: int
    runner: OrtRunner
    library: SampleLibrary
    labels: list[int] | None
    source: str
    scenario: str
    max_batch: int
    fixed_batch: int | None  # the batch a fixed-batch model was exported with
    timeout_s: float
    batch_latency_ms: float  # median time of one batch of max_batch
    throughput_per_s: float  # samples/s at max_batch
    single_latency_ms: float  # median time of one sample alone


def run_scenario(
    model_path: Path,
    options: ScenarioOptions = ScenarioOptions(),
    progress: Callable[[str], None] = lambda step: None,
) -> ScenarioResult:
    """One LoadGen test (or, with ``find_peak``, a bisection of Server tests) on the model."""
    scenario = check_scenario_options(options)
    lg = _import_loadgen()
    with _log_folder(options.log_dir) as logs:
        prepared = _prepare(lg, Path(model_path), scenario, options, progress)
        with prepared.runner:
            if options.find_peak:
                result = _find_peak(prepared, options, logs, progress)
            else:
                result = _run_test(prepared, options, options.target_qps, logs, progress)
        result.log_dir = options.log_dir
        if options.log_dir is None:
            result.notes.append("LoadGen's logs were removed (--log-dir DIR keeps them)")
    return result


def check_scenario_options(options: ScenarioOptions) -> str:
    """Every cheap check before any work; returns LoadGen's name of the scenario."""
    scenario = SCENARIOS.get(options.scenario.strip().lower())
    if scenario is None:
        raise InputError(f"unknown scenario {options.scenario!r}; use {', '.join(SCENARIOS)}")
    check_options(options.engine)
    engine = options.engine
    latency_loop = (engine.batch_sizes, engine.warmup_runs, engine.warmup_s, engine.iterations)
    if any(value is not None for value in latency_loop) or engine.duration_s is not None:
        raise InputError(
            "--batch-sizes, --warmup, --warmup-s, --iterations and --duration belong to the "
            "latency loop; with --scenario use --max-batch and --min-duration"
        )
    if engine.cuda_graph:
        raise InputError("--cuda-graph needs one fixed shape; LoadGen's batches vary in size")
    positive = {
        "--target-qps": options.target_qps,
        "--latency-bound-ms": options.latency_bound_ms,
        "--min-duration": options.min_duration_s,
        "--min-queries": options.min_queries,
        "--samples": options.samples,
        "--max-batch": options.max_batch,
    }
    for flag, value in positive.items():
        if value is not None and not value > 0:
            raise InputError(f"{flag} must be greater than 0, got {value}")
    if options.batch_timeout_ms is not None and not options.batch_timeout_ms >= 0:
        raise InputError(f"--batch-timeout-ms cannot be negative, got {options.batch_timeout_ms}")
    if options.official and any(
        v is not None for v in (options.min_duration_s, options.min_queries)
    ):
        raise InputError("--official sets MLPerf's duration and query count; drop --min-*")
    if options.official and options.latency_bound_ms is not None:
        raise InputError("--official sets MLPerf's latency bound; drop --latency-bound-ms")
    if options.find_peak:
        if scenario != "Server":
            raise InputError("--find-peak searches Server's target QPS: use --scenario server")
        if options.accuracy:
            raise InputError("--find-peak measures performance; run --accuracy separately")
        if not 1 <= options.peak_steps <= 20:
            raise InputError(f"--peak-steps must be 1 to 20, got {options.peak_steps}")
    if options.accuracy and options.images is None:
        raise InputError("--accuracy needs a labelled image folder (--images DIR)")
    if options.labels is not None and options.images is None:
        raise InputError("--labels labels the images of --images DIR; give that folder too")
    if options.images is not None and not Path(options.images).is_dir():
        raise InputError(f"{options.images}: not a folder of images")
    if options.labels is not None and not Path(options.labels).is_file():
        raise InputError(f"{options.labels}: labels file not found")
    if options.log_dir is not None:
        log_dir = Path(options.log_dir)
        if log_dir.exists() and not log_dir.is_dir():
            raise InputError(f"{log_dir}: --log-dir must be a folder, it is a file")
        if not log_dir.parent.is_dir():
            raise InputError(f"{log_dir}: its parent folder does not exist")
        earlier = [*log_dir.glob("mlperf_log_*"), *log_dir.glob("step-*")]
        if earlier and not options.force:
            raise InputError(f"{log_dir}: holds LoadGen logs already (pass --force to overwrite)")
    return scenario


def _import_loadgen() -> Any:
    try:
        import mlperf_loadgen
    except ImportError:
        raise InputError(
            "MLPerf LoadGen is not installed: pip install mlcommons-loadgen "
            "(or resnet-deploy[loadgen]); it has wheels for Linux x86_64, macOS and Windows"
        ) from None
    return mlperf_loadgen


@contextmanager
def _log_folder(log_dir: Path | None) -> Iterator[Path]:
    if log_dir is not None:
        Path(log_dir).mkdir(exist_ok=True)
        yield Path(log_dir)
        return
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-loadgen-") as folder:
        yield Path(folder)


def _prepare(
    lg: Any,
    path: Path,
    scenario: str,
    options: ScenarioOptions,
    progress: Callable[[str], None],
) -> _Prepared:
    """Session, sample library and the timings the defaults and LoadGen's hints come from."""
    _, metadata = load_with_metadata(path)
    fixed = None if metadata.batch == "dynamic" else int(metadata.batch)
    max_batch = options.max_batch or fixed or DEFAULT_MAX_BATCH[scenario]
    if fixed is not None and max_batch != fixed:
        raise InputError(
            f"{path}: has a fixed batch of {fixed}; use --max-batch {fixed} "
            "or export it again with --batch dynamic"
        )
    engine = options.engine
    provider = check_options(engine)
    config = session_config(provider, engine)
    threads = config.intra_op_threads
    progress(f"creating the {provider} session")
    session = create_session(path, config)
    dtype = input_dtype(session)
    classes = session.get_outputs()[0].shape[-1]
    on_gpu = provider in (CUDA, TENSORRT) and engine.io_binding
    runner = OrtRunner(session, binding_device="cuda" if on_gpu else None)
    images = labels = None
    if options.images is not None:
        images = list_images(options.images)[: options.samples]
        if options.accuracy:
            classes = classes if isinstance(classes, int) else NUM_IMAGENET_CLASSES
            labels = read_labels(images, Path(options.images), options.labels, classes)
        source = f"{options.images} ({len(images)} images)"
    else:
        generated = options.samples or GENERATED_SAMPLES[options.official]
        source = f"generated inputs ({generated}, standard normal)"
    library = SampleLibrary(metadata, dtype, images, len(images) if images else generated)
    if scenario == "Server":
        timeout_ms = options.batch_timeout_ms
        timeout_s = (DEFAULT_BATCH_TIMEOUT_MS if timeout_ms is None else timeout_ms) / 1e3
    else:
        timeout_s = 0.0  # a query's samples arrive together: nothing is worth waiting for
    progress(f"warming up batch sizes up to {max_batch} and timing them")
    batch_stats, single_stats = _calibrate(runner, metadata, dtype, max_batch, fixed, scenario)
    return _Prepared(
        lg=lg,
        path=path,
        metadata=metadata,
        provider=provider,
        threads=threads,
        runner=runner,
        library=library,
        labels=labels,
        source=source,
        scenario=scenario,
        max_batch=max_batch,
        fixed_batch=fixed,
        timeout_s=timeout_s,
        batch_latency_ms=batch_stats["p50_ms"],
        throughput_per_s=batch_stats["images_per_s"],
        single_latency_ms=single_stats["p50_ms"],
    )


def _calibrate(
    runner: OrtRunner,
    metadata: ModelMetadata,
    dtype: np.dtype,
    max_batch: int,
    fixed: int | None,
    scenario: str,
) -> tuple[dict[str, float], dict[str, float]]:
    """Run every batch size the SUT may form once (cuDNN tunes itself on a shape's first run,
    which must not land in LoadGen's percentiles), then time max_batch and a single sample."""
    size = metadata.image_size
    shape = (fixed or max_batch, 3, size, size)
    array = np.random.default_rng(0).standard_normal(shape, dtype=np.float32).astype(dtype)
    sizes = [fixed] if fixed else range(1, max_batch + 1) if scenario == "Server" else [max_batch]
    for batch in sizes:
        runner.infer(runner.place(array[:batch]))
    feed = runner.place(array)
    batch_stats = summarize(*time_runs(runner.infer, feed, seconds=CALIBRATION_S), len(array))
    if len(array) == 1 or fixed:  # a fixed-batch model runs a lone sample as a padded batch
        return batch_stats, batch_stats
    runner.infer(runner.place(array[:1]))
    single = time_runs(runner.infer, runner.place(array[:1]), seconds=CALIBRATION_S / 2)
    return batch_stats, summarize(*single, 1)


def _run_test(
    prepared: _Prepared,
    options: ScenarioOptions,
    target_qps: float | None,
    logs: Path,
    progress: Callable[[str], None],
) -> ScenarioResult:
    """One LoadGen test into ``logs``, read back from LoadGen's own logs."""
    lg, scenario = prepared.lg, prepared.scenario
    notes: list[str] = []
    if target_qps is None and scenario in ("Server", "Offline"):
        share = DEFAULT_SERVER_LOAD if scenario == "Server" else 1.0
        target_qps = _round_qps(share * prepared.throughput_per_s)
        notes.append(
            f"no --target-qps: {target_qps:g}, {'half ' if share < 1 else ''}the "
            f"{prepared.throughput_per_s:.1f} samples/s measured at batch {prepared.max_batch}"
        )
    settings = _test_settings(lg, prepared, options, target_qps)
    bound_ms = settings.server_target_latency_ns / 1e6 if scenario == "Server" else None
    if bound_ms is not None and prepared.single_latency_ms > bound_ms:
        notes.append(
            f"one sample alone takes {prepared.single_latency_ms:.1f} ms here (median), over "
            f"the {bound_ms:g} ms bound: no target QPS can be VALID"
        )
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(logs)
    log_settings.enable_trace = False  # a per-sample trace: large, and nothing here reads it
    sut = BatchingSut(
        lg,
        prepared.runner,
        prepared.library,
        max_batch=prepared.max_batch,
        timeout_s=prepared.timeout_s,
        fixed_batch=prepared.fixed_batch,
    )
    progress(_announce(prepared, settings, target_qps))
    library = prepared.library
    sut_handle = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
    performance_count = min(library.count, PERFORMANCE_SAMPLES)
    qsl_handle = lg.ConstructQSL(library.count, performance_count, library.load, library.unload)
    try:
        with sut.serving():
            # LoadGen reads audit.config from the current directory unless given another path;
            # a path in our log folder (where there is none) keeps a stray one from applying
            lg.StartTestWithLogSettings(
                sut_handle, qsl_handle, settings, log_settings, str(logs / "audit.config")
            )
    finally:
        lg.DestroyQSL(qsl_handle)
        lg.DestroySUT(sut_handle)
        library.unload(list(library.loaded))
    if sut.error is not None:
        raise ResnetDeployError(
            f"inference failed during the LoadGen run: {sut.error}"
            + (" (try a smaller --max-batch)" if prepared.max_batch > 1 else "")
        )
    result = _read_result(prepared, options, logs, settings, target_qps, sut)
    result.notes[:0] = notes
    if options.accuracy:
        _accuracy(result, prepared, logs, sut)
    return result


def _round_qps(qps: float) -> float:
    """Three significant figures: a target QPS that reads well and repeats."""
    return float(f"{qps:.3g}") if qps > 0 else qps


def _test_settings(
    lg: Any, prepared: _Prepared, options: ScenarioOptions, target_qps: float | None
) -> Any:
    scenario = prepared.scenario
    settings = lg.TestSettings()
    if options.official:
        if settings.FromConfig("", MLPERF_MODEL, scenario, 0) != 0:
            raise ResnetDeployError("LoadGen could not read its built-in mlperf.conf")
    else:
        settings.min_duration_ms = round(1e3 * (options.min_duration_s or QUICK_MIN_DURATION_S))
        min_queries = options.min_queries or QUICK_MIN_QUERIES.get(scenario)
        if min_queries is not None:
            settings.min_query_count = min_queries
        bound_ms = options.latency_bound_ms or DEFAULT_LATENCY_BOUND_MS
        settings.server_target_latency_ns = round(bound_ms * 1e6)
        settings.multi_stream_samples_per_query = MULTISTREAM_SAMPLES
    settings.scenario = getattr(lg.TestScenario, scenario)
    settings.mode = lg.TestMode.AccuracyOnly if options.accuracy else lg.TestMode.PerformanceOnly
    if scenario == "Server":
        settings.server_target_qps = target_qps
        if not options.official and not options.accuracy:
            # An impossible target would queue minutes of work. LoadGen ends the run (INVALID,
            # saying why) once more queries wait than the measured throughput serves in a few
            # times the bound: a run with such a backlog cannot keep its p99 under the bound.
            bound_s = settings.server_target_latency_ns / 1e9
            backlog = OVERLOAD_FACTOR * prepared.throughput_per_s * bound_s
            settings.server_max_async_queries = max(MIN_OUTSTANDING, math.ceil(backlog))
    elif scenario == "Offline":
        settings.offline_expected_qps = target_qps
    elif scenario == "SingleStream":
        settings.single_stream_expected_latency_ns = round(prepared.single_latency_ms * 1e6)
    else:
        settings.multi_stream_expected_latency_ns = round(prepared.batch_latency_ms * 1e6)
    return settings


def _announce(prepared: _Prepared, settings: Any, target_qps: float | None) -> str:
    """What LoadGen is about to do, and for about how long at the speed just measured."""
    scenario = prepared.scenario
    duration_s = settings.min_duration_ms / 1e3
    if settings.mode == prepared.lg.TestMode.AccuracyOnly:
        return f"LoadGen {scenario}, accuracy: every one of the {prepared.library.count} samples"
    queries = settings.min_query_count
    if scenario == "Server":
        estimate, load = max(duration_s, queries / target_qps), f" at {target_qps:g} QPS"
        what = f"{queries} queries"
    elif scenario == "Offline":
        estimate = max(duration_s, queries / prepared.throughput_per_s)
        load, what = f", expecting {target_qps:g} samples/s", f"one query of {queries}+ samples"
    else:
        single = scenario == "SingleStream"
        per_query_ms = prepared.single_latency_ms if single else prepared.batch_latency_ms
        estimate, load = max(duration_s, queries * per_query_ms / 1e3), ""
        what = f"{queries} queries"
    return (
        f"LoadGen {scenario}{load}: at least {duration_s:g} s and {what} (about {estimate:.0f} s)"
    )


def _read_result(
    prepared: _Prepared,
    options: ScenarioOptions,
    logs: Path,
    settings: Any,
    target_qps: float | None,
    sut: BatchingSut,
) -> ScenarioResult:
    summary_file = logs / "mlperf_log_summary.txt"
    if not summary_file.is_file():
        raise ResnetDeployError(f"LoadGen wrote no summary into {logs}")
    summary = parse_summary(summary_file.read_text())
    detail_file = logs / "mlperf_log_detail.txt"
    detail = parse_detail(detail_file.read_text() if detail_file.is_file() else "")
    values = summary.values
    scenario = prepared.scenario
    samples_per_query = parse_number(values.get("samples_per_query"), int)
    mean_ns = parse_number(values.get("Mean latency (ns)"))
    samples_per_s = parse_number(
        values.get("Completed samples per second") or values.get("Samples per second")
    )
    if samples_per_s is None and mean_ns and samples_per_query:
        samples_per_s = samples_per_query * 1e9 / mean_ns
    headline = next(
        (
            (float(m[1]), parse_number(value))
            for key, value in values.items()
            if (m := re.fullmatch(r"([\d.]+)th percentile latency \(ns\)", key))
        ),
        (None, None),
    )
    estimate = next(
        (
            parse_number(m[1])
            for line in summary.early_stopping
            if (m := re.search(r"percentile estimate: (\d+)", line))
        ),
        None,
    )
    bound_ns = parse_number(values.get("target_latency (ns)"))
    result = ScenarioResult(
        model=prepared.path,
        model_sha256=sha256_of(prepared.path),
        metadata=prepared.metadata,
        provider=prepared.provider,
        threads=prepared.threads,
        input_dtype=prepared.library.dtype.name,
        scenario=scenario,
        mode=values.get("Mode", str(settings.mode).rpartition(".")[2]),
        official=options.official,
        # AccuracyOnly has no performance verdict: valid means LoadGen reported no error
        valid=not detail["errors"] if options.accuracy else values.get("Result is") == "VALID",
        invalid_reasons=[],
        samples_per_s=samples_per_s,
        latency_metric_ms=_ms(headline[1]),
        latency_metric_percentile=headline[0],
        early_stopping_estimate_ms=_ms(estimate),
        target_qps=target_qps if scenario in ("Server", "Offline") else None,
        latency_bound_ms=bound_ns / 1e6 if scenario == "Server" and bound_ns else None,
        samples_per_query=samples_per_query,
        queries=detail["values"].get("result_query_count"),
        min_ms=_ms(parse_number(values.get("Min latency (ns)"))),
        mean_ms=_ms(mean_ns),
        max_ms=_ms(parse_number(values.get("Max latency (ns)"))),
        min_duration_ms=parse_number(values.get("min_duration (ms)"), int),
        min_query_count=parse_number(values.get("min_query_count"), int),
        max_batch=prepared.max_batch,
        batch_timeout_ms=prepared.timeout_s * 1e3,
        mean_batch_size=sut.samples / sut.batches if sut.batches else None,
        sample_source=prepared.source,
        sample_count=prepared.library.count,
        early_stopping=summary.early_stopping,
        recommendations=summary.recommendations,
        loadgen_errors=detail["errors"],
        loadgen_warnings=detail["warnings"],
        loadgen_version=str(detail["values"].get("loadgen_version", "")),
        environment=describe_environment(),
    )
    for percentile, name in PERCENTILE_FIELDS.items():
        setattr(
            result, name, _ms(parse_number(values.get(f"{percentile} percentile latency (ns)")))
        )
    result.invalid_reasons = _invalid_reasons(result, summary)
    if options.official and prepared.metadata.arch != MLPERF_MODEL:
        result.notes.append(
            f"--official applies MLPerf's {MLPERF_MODEL} settings to this {prepared.metadata.arch}"
        )
    return result


def _ms(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e6


def _invalid_reasons(result: ScenarioResult, summary: Summary) -> list[str]:
    """Why LoadGen said INVALID, in its own words, with the figures its checks compared."""
    if result.valid:
        return []
    reasons = []
    for check, satisfied in summary.checks.items():
        if satisfied:
            continue
        reason = check.replace("satisfied", "not satisfied")
        if check.startswith("Performance") and result.latency_bound_ms and result.p99_ms:
            reason += f" (p99 {result.p99_ms:.1f} ms, bound {result.latency_bound_ms:g} ms)"
        elif check.startswith("Min duration") and result.min_duration_ms:
            reason += f" (minimum {result.min_duration_ms / 1e3:g} s)"
        elif check.startswith("Min queries") and result.min_query_count:
            reason += f" (minimum {result.min_query_count})"
        elif check.startswith("Early stopping") and summary.early_stopping:
            reason += ": " + " ".join(summary.early_stopping)
        reasons.append(reason)
    reasons += [f"LoadGen recommends: {text}" for text in summary.recommendations]
    for text in result.loadgen_errors:
        if "Too many outstanding queries" in text and not result.official:
            text += (
                f" (quick Server runs stop once the backlog would take over {OVERLOAD_FACTOR}x "
                "the latency bound to serve: the target QPS is beyond this system)"
            )
        reasons.append(f"LoadGen error: {text}")
    return reasons or ["LoadGen's summary says INVALID without a reason"]


def _accuracy(result: ScenarioResult, prepared: _Prepared, logs: Path, sut: BatchingSut) -> None:
    """Top-1 from LoadGen's accuracy log, which must agree with what the SUT sent."""
    logged = read_accuracy_log(logs / "mlperf_log_accuracy.json")
    if logged != sut.predictions:
        raise ResnetDeployError(
            f"LoadGen's accuracy log ({len(logged)} samples) disagrees with the "
            f"{len(sut.predictions)} responses the SUT sent"
        )
    labels = prepared.labels or []
    if set(logged) != set(range(len(labels))):
        raise ResnetDeployError(
            f"LoadGen's accuracy log covers {len(logged)} of the {len(labels)} samples"
        )
    correct = sum(logged[index] == label for index, label in enumerate(labels))
    result.top1_accuracy = correct / len(labels)
    result.accuracy_samples = len(labels)


def _find_peak(
    prepared: _Prepared, options: ScenarioOptions, logs: Path, progress: Callable[[str], None]
) -> ScenarioResult:
    """Bisect the Server target QPS between 0 and the throughput measured at max_batch (Server
    cannot beat that); the highest VALID step is the result, every step is listed.

    A step must run LoadGen's minimum query count, so a low target means a long step: the
    search stops above the QPS at which one step would take more than MAX_PEAK_STEP_S.
    """
    bound_ms = options.latency_bound_ms or DEFAULT_LATENCY_BOUND_MS
    if prepared.single_latency_ms > bound_ms:
        raise ResnetDeployError(
            f"--find-peak: one sample alone takes {prepared.single_latency_ms:.1f} ms here "
            f"(median), over the {bound_ms:g} ms bound: no target QPS can be VALID "
            "(raise --latency-bound-ms, or use a faster provider)"
        )
    probe = _test_settings(prepared.lg, prepared, options, prepared.throughput_per_s)
    longest_s = max(MAX_PEAK_STEP_S, probe.min_duration_ms / 1e3)
    floor = probe.min_query_count / longest_s
    low, high = 0.0, prepared.throughput_per_s
    steps: list[PeakStep] = []
    best = last = None
    for number in range(1, options.peak_steps + 1):
        qps = _round_qps((low + high) / 2)
        if qps < floor:
            break
        progress(f"find-peak step {number} of {options.peak_steps}: {qps:g} QPS")
        folder = logs / f"step-{number}-qps-{qps:g}"
        folder.mkdir(exist_ok=True)
        last = _run_test(prepared, options, qps, folder, progress)
        reason = "" if last.valid else last.invalid_reasons[0]
        steps.append(PeakStep(qps, last.valid, last.samples_per_s, last.p99_ms, reason))
        progress(f"{qps:g} QPS: {'VALID' if last.valid else 'INVALID: ' + reason}")
        if last.valid:
            low, best = qps, last
        else:
            high = qps
    too_slow = (
        f"below {floor:.3g} QPS one step would take over {longest_s:g} s "
        f"(LoadGen's {probe.min_query_count} queries; --min-queries sets fewer)"
    )
    if last is None:
        raise ResnetDeployError(f"--find-peak: nothing to search: {too_slow}")
    result = best or last
    result.peak_search = steps
    if best is None:
        lowest = f"no target QPS tried was VALID, down to {high:g}"
        stop = f"; {too_slow}" if len(steps) < options.peak_steps else ""
        result.invalid_reasons.insert(0, lowest + stop)
    else:
        result.notes.append(f"highest VALID target QPS of {len(steps)} steps: {low:g}")
    return result


def format_result(result: ScenarioResult) -> str:
    """The terminal report: what ran where, LoadGen's verdict and why, then the numbers."""
    meta = result.metadata
    settings = "MLPerf's official settings" if result.official else "quick settings"
    lines = [
        f"{result.model}: {meta.arch} ({meta.variant}), {result.input_dtype}, "
        f"{result.provider}, {result.threads} threads",
        f"LoadGen {result.loadgen_version.split()[0] if result.loadgen_version else ''}: "
        f"{result.scenario}, {result.mode}, {settings}; samples: {result.sample_source}",
        f"Result: {_verdict(result)}",
    ]
    lines += [f"  - {reason}" for reason in result.invalid_reasons]
    if result.peak_search:
        rows = [
            [s.target_qps, "VALID" if s.valid else "INVALID", s.samples_per_s, s.p99_ms, s.reason]
            for s in result.peak_search
        ]
        headers = ["target QPS", "result", "samples/s", "p99 ms", "why"]
        lines += ["", format_table(headers, [[_cell(v) for v in row] for row in rows])]
    rows = [
        ["target QPS", result.target_qps],
        ["latency bound ms (p99)", result.latency_bound_ms],
        ["samples/s", result.samples_per_s],
        [
            f"p{result.latency_metric_percentile:g} latency ms"
            if result.latency_metric_percentile
            else "scenario latency ms",
            result.latency_metric_ms,
        ],
        ["early-stopping estimate ms", result.early_stopping_estimate_ms],
        ["top-1 accuracy", result.top1_accuracy],
        ["accuracy samples", result.accuracy_samples],
        ["queries", result.queries],
        ["samples per query", result.samples_per_query],
        ["mean batch (max, timeout ms)", _batching(result)],
        *[
            [name.replace("_", ".").removesuffix(".ms") + " ms", getattr(result, name)]
            for name in ("min_ms", "mean_ms", *PERCENTILE_FIELDS.values(), "max_ms")
        ],
    ]
    lines += ["", format_table(["measure", "value"], [r for r in rows if r[1] is not None])]
    notes = result.notes + [f"LoadGen warning: {w}" for w in result.loadgen_warnings]
    if result.log_dir is not None:
        notes.append(f"LoadGen's logs: {result.log_dir}")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _verdict(result: ScenarioResult) -> str:
    if result.top1_accuracy is not None:
        return f"top-1 {result.top1_accuracy:.2%} of {result.accuracy_samples} (AccuracyOnly)"
    return "VALID" if result.valid else "INVALID"


def _batching(result: ScenarioResult) -> str | None:
    if result.mean_batch_size is None:
        return None
    return f"{result.mean_batch_size:.2f} ({result.max_batch}, {result.batch_timeout_ms:g})"


def _cell(value: Any) -> Any:
    return "-" if value is None else value
