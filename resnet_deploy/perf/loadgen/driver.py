"""The LoadGen run: prepare the system under test and the samples, run LoadGen, read its logs."""

from __future__ import annotations

import math
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.data.images import list_images
from resnet_deploy.errors import InputError, ResnetDeployError
from resnet_deploy.files import sha256_of
from resnet_deploy.model.labels import NUM_IMAGENET_CLASSES
from resnet_deploy.model.metadata import IMAGENET_MEAN, IMAGENET_STD, ModelMetadata
from resnet_deploy.model.onnxfile import load_with_metadata
from resnet_deploy.perf.bench import check_options, session_config
from resnet_deploy.perf.loadgen.options import (
    CALIBRATION_S,
    DEFAULT_BATCH_TIMEOUT_MS,
    DEFAULT_LATENCY_BOUND_MS,
    DEFAULT_MAX_BATCH,
    DEFAULT_SERVER_LOAD,
    GENERATED_SAMPLES,
    MAX_PEAK_STEP_S,
    MIN_OUTSTANDING,
    MLPERF_MODEL,
    MULTISTREAM_SAMPLES,
    OVERLOAD_FACTOR,
    PERFORMANCE_SAMPLES,
    QUICK_MIN_DURATION_S,
    QUICK_MIN_QUERIES,
    REMOTE_CONCURRENCY,
    REMOTE_MAX_BATCH,
    PeakStep,
    ScenarioOptions,
    ScenarioResult,
    check_scenario_options,
)
from resnet_deploy.perf.loadgen.results import accuracy, read_result
from resnet_deploy.perf.loadgen.samples import Preprocessing, SampleLibrary, read_labels
from resnet_deploy.perf.loadgen.sut import InProcess, Remote
from resnet_deploy.runtime.int8target import require_target
from resnet_deploy.runtime.names import CUDA, TENSORRT
from resnet_deploy.runtime.providers import create_session, input_dtype, tensorrt_build_note
from resnet_deploy.runtime.runners import OrtRunner
from resnet_deploy.serving.client import EndpointOptions, connect


@dataclass
class _Prepared:
    """What every LoadGen test of one call shares: the system, samples and measured speeds."""

    lg: Any
    path: Path | None
    metadata: ModelMetadata | None
    provider: str
    threads: int | None
    instances: int | None
    system: InProcess | Remote
    endpoint: str | None  # URL and model name of a served model
    concurrency: int | None
    library: SampleLibrary
    labels: list[int] | None
    source: str
    scenario: str
    max_batch: int
    pad_to: int | None  # every batch padded to this warmed size (None: run as formed)
    warmed: list[int]  # batch sizes run before LoadGen started
    timeout_s: float
    batch_latency_ms: float  # median time of one batch of max_batch
    throughput_per_s: float  # samples/s at max_batch, every instance at once
    single_latency_ms: float  # median time of one sample alone


@dataclass
class _System:
    """What ``_prepare`` needs to know about the system under test before it runs."""

    system: InProcess | Remote
    provider: str
    threads: int | None
    instances: int | None  # in-process sessions; None for a served model
    dtype: np.dtype
    classes: int | None
    image_size: int
    fixed_batch: int | None = None  # a served model's: the file says it in process
    batch_limit: int | None = None  # the largest batch a served model accepts
    endpoint: str | None = None
    concurrency: int | None = None


def run_scenario(
    model_path: Path | None,
    options: ScenarioOptions | None = None,
    progress: Callable[[str], None] = lambda step: None,
) -> ScenarioResult:
    """One LoadGen test (or, with ``find_peak``, a bisection of Server tests) on the model: in
    process, or served at ``options.endpoint`` (then the file, if given, only describes it)."""
    started = time.perf_counter()
    options = options or ScenarioOptions()
    scenario = check_scenario_options(options)
    if model_path is None and options.endpoint is None:
        raise InputError("give the model file, or --url of a server that serves it")
    lg = _import_loadgen()
    with _log_folder(options.log_dir) as logs:
        prepared = _prepare(lg, model_path, scenario, options, progress)
        try:
            if options.find_peak:
                result = _find_peak(prepared, options, logs, progress, started)
            else:
                result = _run_test(prepared, options, options.target_qps, logs, progress)
        finally:
            prepared.system.close()
        result.log_dir = options.log_dir
        if options.log_dir is None:
            result.notes.append("LoadGen's logs were removed (--log-dir DIR keeps them)")
    return result


def run_interruptibly(start_test: Callable[..., None], *args: Any) -> None:
    """Run LoadGen's blocking ``StartTest`` so that Ctrl-C and SIGTERM stop it cleanly.

    Python raises KeyboardInterrupt in the main thread; if that thread were inside StartTest,
    it would surface in a callback LoadGen makes into Python and crash the process (SIGSEGV).
    So the test runs in a worker thread while the main thread waits in Python, where the
    interrupt lands harmlessly. LoadGen has no way to abort a test, so the interrupt is passed
    on marked ``native_work_running``: the caller removes its files as the exception unwinds,
    and the CLI then ends the process without waiting for LoadGen's threads.
    """
    failure: list[BaseException] = []

    def start() -> None:
        try:
            start_test(*args)
        except BaseException as exc:  # handed to the main thread
            failure.append(exc)

    worker = threading.Thread(target=start, name="loadgen", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.1)
    except KeyboardInterrupt as interrupt:
        for stop in (signal.SIGINT, signal.SIGTERM):  # a second one must not cut the cleanup
            signal.signal(stop, signal.SIG_IGN)
        interrupt.native_work_running = True  # type: ignore[attr-defined]
        raise
    if failure:
        raise failure[0]


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
    # LoadGen may still be writing there when an interrupt removes it: ignore what it adds
    with tempfile.TemporaryDirectory(
        prefix="resnet-deploy-loadgen-", ignore_cleanup_errors=True
    ) as folder:
        yield Path(folder)


def _prepare(
    lg: Any,
    path: Path | None,
    scenario: str,
    options: ScenarioOptions,
    progress: Callable[[str], None],
) -> _Prepared:
    """System, sample library and the timings the defaults and LoadGen's hints come from."""
    proto, metadata = (None, None) if path is None else load_with_metadata(path)
    if options.endpoint is None:
        fixed = None if metadata.batch == "dynamic" else int(metadata.batch)
        max_batch = _max_batch(options, scenario, path, fixed, None)
        provider = check_options(options.engine)
        for warning in require_target(proto, metadata, provider, name=str(path)):  # or refuses
            progress(f"warning: {warning}")
        found = _in_process(path, metadata, max_batch, options, provider, progress)
    else:
        found = _remote(options.endpoint, metadata, progress)
        fixed = found.fixed_batch
        max_batch = _max_batch(options, scenario, options.endpoint.url, fixed, found.batch_limit)
    images = labels = None
    if options.images is not None:
        images = list_images(options.images)[: options.samples]
        if options.accuracy:
            classes = found.classes if isinstance(found.classes, int) else NUM_IMAGENET_CLASSES
            labels = read_labels(images, Path(options.images), options.labels, classes)
        source = f"{options.images} ({len(images)} images)"
    else:
        generated = options.samples or GENERATED_SAMPLES[options.official]
        source = f"generated inputs ({generated}, standard normal)"
    if metadata is not None:
        preprocessing = Preprocessing(metadata.image_size, metadata.mean, metadata.std)
    else:
        preprocessing = Preprocessing(found.image_size, IMAGENET_MEAN, IMAGENET_STD)
    count = len(images) if images else generated
    library = SampleLibrary(preprocessing, found.dtype, images, count)
    if scenario == "Server" and options.endpoint is None:
        timeout_ms = options.batch_timeout_ms
        timeout_s = (DEFAULT_BATCH_TIMEOUT_MS if timeout_ms is None else timeout_ms) / 1e3
    else:
        timeout_s = 0.0  # a query's samples arrive together, or the server batches them
    warmed, pad_to = _batch_plan(scenario, max_batch, fixed, remote=options.endpoint is not None)
    progress(f"warming up batch sizes {_sizes(warmed)} and timing batch {max_batch}")
    batch_stats, single_stats = _calibrate(
        found.system, preprocessing, found.dtype, max_batch, warmed, fixed, found.instances or 1
    )
    return _Prepared(
        lg=lg,
        path=path,
        metadata=metadata,
        provider=found.provider,
        threads=found.threads,
        instances=found.instances,
        system=found.system,
        endpoint=found.endpoint,
        concurrency=found.concurrency,
        library=library,
        labels=labels,
        source=source,
        scenario=scenario,
        max_batch=max_batch,
        pad_to=pad_to,
        warmed=warmed,
        timeout_s=timeout_s,
        batch_latency_ms=batch_stats["p50_ms"],
        throughput_per_s=batch_stats["images_per_s"],
        single_latency_ms=single_stats["p50_ms"],
    )


def _max_batch(
    options: ScenarioOptions, scenario: str, where: object, fixed: int | None, limit: int | None
) -> int:
    """The largest batch the SUT runs (or sends): asked for, else the scenario's default."""
    defaults = DEFAULT_MAX_BATCH if options.endpoint is None else REMOTE_MAX_BATCH
    max_batch = options.max_batch or fixed or defaults[scenario]
    if limit is not None:
        max_batch = min(max_batch, limit) if options.max_batch is None else max_batch
    if fixed is not None and max_batch != fixed:
        raise InputError(
            f"{where}: has a fixed batch of {fixed}; use --max-batch {fixed} "
            "or export it again with --batch dynamic"
        )
    if limit is not None and max_batch > limit:
        raise InputError(f"{where}: --max-batch {max_batch} is over its max_batch_size {limit}")
    return max_batch


def _in_process(
    path: Path,
    metadata: ModelMetadata,
    max_batch: int,
    options: ScenarioOptions,
    provider: str,
    progress: Callable[[str], None],
) -> _System:
    """The sessions LoadGen's queries run on, one per instance; TensorRT gets one profile for
    batches 1 to the largest, so no engine is rebuilt while LoadGen times."""
    engine = options.engine
    config = session_config(
        provider,
        engine,
        metadata=metadata,
        model_sha256=sha256_of(path),
        batch_sizes=(1, max_batch),
    )
    count = options.instances
    progress(f"creating the {provider} session" + (f"s of {count} instances" if count > 1 else ""))
    note = tensorrt_build_note(config)
    if note:
        progress(note)
    on_gpu = provider in (CUDA, TENSORRT) and engine.io_binding
    runners = [
        OrtRunner(create_session(path, config), binding_device="cuda" if on_gpu else None)
        for _ in range(count)
    ]
    session = runners[0].session
    classes = session.get_outputs()[0].shape[-1]
    return _System(
        system=InProcess(runners),
        provider=provider,
        threads=config.intra_op_threads,
        instances=count,
        dtype=input_dtype(session),
        classes=classes if isinstance(classes, int) else None,
        image_size=metadata.image_size,
    )


def _remote(
    options: EndpointOptions, metadata: ModelMetadata | None, progress: Callable[[str], None]
) -> _System:
    progress(f"reading the model's metadata from {options.url}")
    model = connect(options, default_name=metadata.arch if metadata else None)
    concurrency = options.concurrency or REMOTE_CONCURRENCY
    return _System(
        system=Remote(model, concurrency=concurrency, timeout_s=options.timeout_s),
        provider=f"{model.server} over {model.protocol}",
        threads=None,
        instances=None,
        dtype=model.dtype,
        classes=None,
        image_size=model.image_size,
        fixed_batch=model.fixed_batch,
        batch_limit=model.max_batch_size or None,
        endpoint=f"{model.url} {model.name}",
        concurrency=concurrency,
    )


def _batch_plan(
    scenario: str, max_batch: int, fixed: int | None, *, remote: bool
) -> tuple[list[int], int | None]:
    """The batch sizes to run before LoadGen starts, and the size every batch is padded to.

    A shape's first run is slow (cuDNN's exhaustive search, a TensorRT engine build) and must
    not land in LoadGen's figures, so every batch size the SUT will run is warmed up. Server
    forms every size up to max_batch; MultiStream's query of 8 splits into known sizes; but
    Offline's one query holds as many samples as LoadGen decides, so its last, short batch is
    padded to the warmed max_batch instead (the padding's answers are dropped). A served
    model's server forms its own batches, so nothing is padded for it.
    """
    if fixed is not None:
        return [fixed], fixed
    if scenario == "Server":
        return list(range(1, max_batch + 1)), None
    if scenario == "MultiStream":
        rest = MULTISTREAM_SAMPLES % max_batch
        return sorted({min(max_batch, MULTISTREAM_SAMPLES), *([rest] if rest else [])}), None
    if scenario == "Offline":
        return [max_batch], None if remote else max_batch
    return [1], None  # SingleStream: one sample per query


def _calibrate(
    system: InProcess | Remote,
    preprocessing: Preprocessing,
    dtype: np.dtype,
    max_batch: int,
    warmed: list[int],
    fixed: int | None,
    instances: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """Run every batch size the SUT will form once, then time max_batch (every instance at
    once) and a single sample (alone)."""
    size = preprocessing.image_size
    shape = (max(max_batch, *warmed), 3, size, size)
    array = np.random.default_rng(0).standard_normal(shape, dtype=np.float32).astype(dtype)
    for batch in warmed:
        system.warm(array[:batch])
    batch_stats = system.time(array[:max_batch], CALIBRATION_S, alone=False)
    if (max_batch == 1 and instances == 1) or fixed is not None:  # fixed: a lone one padded
        return batch_stats, batch_stats
    return batch_stats, system.time(array[:1], CALIBRATION_S / 2, alone=True)


def _sizes(sizes: list[int]) -> str:
    if len(sizes) > 2 and sizes == list(range(1, sizes[-1] + 1)):
        return f"1 to {sizes[-1]}"
    return ", ".join(map(str, sizes))


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
            + (f", {prepared.concurrency} requests in flight" if prepared.concurrency else "")
            + (f", {prepared.instances} instances" if (prepared.instances or 1) > 1 else "")
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
    sut = prepared.system.sut(
        lg,
        prepared.library,
        max_batch=prepared.max_batch,
        timeout_s=prepared.timeout_s,
        pad_to=prepared.pad_to,
    )
    progress(_announce(prepared, settings, target_qps))
    library = prepared.library
    sut_handle = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
    performance_count = min(library.count, PERFORMANCE_SAMPLES)
    qsl_handle = lg.ConstructQSL(library.count, performance_count, library.load, library.unload)
    loadgen_running = False
    try:
        with sut.serving():
            # LoadGen reads audit.config from the current directory unless given another path;
            # a path in our log folder (where there is none) keeps a stray one from applying
            run_interruptibly(
                lg.StartTestWithLogSettings,
                sut_handle,
                qsl_handle,
                settings,
                log_settings,
                str(logs / "audit.config"),
            )
    except KeyboardInterrupt as interrupt:
        loadgen_running = getattr(interrupt, "native_work_running", False)
        raise
    finally:
        if not loadgen_running:  # LoadGen's threads still use them: they end with the process
            lg.DestroyQSL(qsl_handle)
            lg.DestroySUT(sut_handle)
            library.unload(list(library.loaded))
    if sut.error is not None:
        raise ResnetDeployError(
            f"inference failed during the LoadGen run: {sut.error}"
            + (" (try a smaller --max-batch)" if prepared.max_batch > 1 else "")
        )
    result = read_result(prepared, options, logs, settings, target_qps, sut)
    result.notes[:0] = notes
    if options.accuracy:
        accuracy(result, prepared, logs, sut)
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
        bound_ms = _latency_bound_ms(options)
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
        estimate, load = _server_step_s(settings, target_qps), f" at {target_qps:g} QPS"
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


def _find_peak(
    prepared: _Prepared,
    options: ScenarioOptions,
    logs: Path,
    progress: Callable[[str], None],
    started: float,
) -> ScenarioResult:
    """Bisect the Server target QPS between 0 and the throughput measured at max_batch (Server
    cannot beat that); the highest VALID step is the result, every step is listed.

    A step must run LoadGen's minimum query count, so a low target means a long step: the
    search stops above the QPS at which one step would take more than MAX_PEAK_STEP_S or,
    given ``peak_budget_s``, before a step that would end past it (counted from ``started``).
    """
    bound_ms = _latency_bound_ms(options)
    if prepared.single_latency_ms > bound_ms:
        raise ResnetDeployError(
            f"--find-peak: one sample alone takes {prepared.single_latency_ms:.1f} ms here "
            f"(median), over the {bound_ms:g} ms bound: no target QPS can be VALID "
            "(raise --latency-bound-ms, or use a faster provider)"
        )
    probe = _test_settings(prepared.lg, prepared, options, prepared.throughput_per_s)
    budget = options.peak_budget_s
    longest_s = max(MAX_PEAK_STEP_S, probe.min_duration_ms / 1e3)
    floor = probe.min_query_count / longest_s if budget is None else 0.0  # else: the budget's
    low, high = 0.0, prepared.throughput_per_s
    steps: list[PeakStep] = []
    best = last = None
    stopped = ""  # why the search ended before its last step
    for number in range(1, options.peak_steps + 1):
        qps = _round_qps((low + high) / 2)
        if qps < floor:
            stopped = (
                f"below {floor:.3g} QPS one step would take over {longest_s:g} s "
                f"(LoadGen's {probe.min_query_count} queries; --min-queries sets fewer)"
            )
            break
        step_s = _server_step_s(probe, qps)
        if budget is not None and time.perf_counter() - started + step_s > budget:
            stopped = f"a step at {qps:g} QPS (about {step_s:.0f} s) would end past the budget"
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
    if last is None:
        raise ResnetDeployError(f"--find-peak: nothing to search: {stopped}")
    result = best or last
    result.peak_search, result.peak_stopped = steps, stopped
    stop = f"; stopped early: {stopped}" if stopped else ""
    if best is None:
        lowest = f"no target QPS tried was VALID, down to {high:g}"
        result.invalid_reasons.insert(0, lowest + stop)
    else:
        result.notes.append(f"highest VALID target QPS of {len(steps)} steps: {low:g}{stop}")
    return result


def _server_step_s(settings: Any, target_qps: float) -> float:
    """How long a Server test runs: its minimum duration, or its minimum queries' worth."""
    return max(settings.min_duration_ms / 1e3, settings.min_query_count / target_qps)


def _latency_bound_ms(options: ScenarioOptions) -> float:
    bound = options.latency_bound_ms
    return DEFAULT_LATENCY_BOUND_MS if bound is None else bound
