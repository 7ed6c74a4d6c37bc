"""The LoadGen run: prepare the system under test and the samples, run LoadGen, read its logs."""

from __future__ import annotations

import math
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from resnet_deploy.errors import InputError, ResnetDeployError
from resnet_deploy.model.onnxfile import ModelFile, read_model
from resnet_deploy.perf.loadgen.options import (
    DEFAULT_LATENCY_BOUND_MS,
    DEFAULT_SERVER_LOAD,
    MAX_PEAK_STEP_S,
    MIN_OUTSTANDING,
    MLPERF_MODEL,
    MULTISTREAM_SAMPLES,
    OVERLOAD_FACTOR,
    PERFORMANCE_SAMPLES,
    QUICK_MIN_DURATION_S,
    QUICK_MIN_QUERIES,
    PeakStep,
    ScenarioOptions,
    ScenarioResult,
    check_scenario_options,
)
from resnet_deploy.perf.loadgen.prepare import Prepared, prepare
from resnet_deploy.perf.loadgen.results import accuracy, read_result
from resnet_deploy.steps import Progress, no_progress


def run_scenario(
    model: Path | ModelFile | None,
    options: ScenarioOptions | None = None,
    progress: Progress = no_progress,
) -> ScenarioResult:
    """One LoadGen test (or, with ``find_peak``, a bisection of Server tests) on the model: in
    process, or served at ``options.endpoint`` (then the file, if given, only describes it)."""
    started = time.perf_counter()
    options = options or ScenarioOptions()
    scenario = check_scenario_options(options)
    if model is None and options.endpoint is None:
        raise InputError(
            "give the model file, or the URL of a server that serves it", options=["url"]
        )
    if model is not None and not isinstance(model, ModelFile):
        model = read_model(model, require_metadata=True)
    lg = _import_loadgen()
    with _log_folder(options.log_dir) as logs:
        prepared = prepare(lg, model, scenario, options, progress)
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


def _run_test(
    prepared: Prepared,
    options: ScenarioOptions,
    target_qps: float | None,
    logs: Path,
    progress: Progress,
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
        smaller = prepared.max_batch > 1
        raise ResnetDeployError(
            f"inference failed during the LoadGen run: {sut.error}"
            + (" (try a smaller largest batch)" if smaller else ""),
            options=["max_batch"] if smaller else (),
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
    lg: Any, prepared: Prepared, options: ScenarioOptions, target_qps: float | None
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


def _announce(prepared: Prepared, settings: Any, target_qps: float | None) -> str:
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
    prepared: Prepared,
    options: ScenarioOptions,
    logs: Path,
    progress: Progress,
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
            f"the peak search cannot start: one sample alone takes "
            f"{prepared.single_latency_ms:.1f} ms here (median), over the {bound_ms:g} ms "
            "bound: no target QPS can be VALID (raise the latency bound, or use a faster "
            "provider)",
            options=["find_peak", "latency_bound_ms"],
        )
    probe = _test_settings(prepared.lg, prepared, options, prepared.throughput_per_s)
    budget = options.peak_budget_s
    longest_s = max(MAX_PEAK_STEP_S, probe.min_duration_ms / 1e3)
    floor = probe.min_query_count / longest_s if budget is None else 0.0  # else: the budget's
    low, high = 0.0, prepared.throughput_per_s
    steps: list[PeakStep] = []
    best = last = None
    stopped = ""  # why the search ended before its last step
    progress("peak search steps", 0, options.peak_steps)
    for number in range(1, options.peak_steps + 1):
        qps = _round_qps((low + high) / 2)
        if qps < floor:
            stopped = (
                f"below {floor:.3g} QPS one step would take over {longest_s:g} s "
                f"(LoadGen's {probe.min_query_count} queries; a lower minimum query count "
                "shortens it)"
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
        progress("peak search steps", number, options.peak_steps)
        if last.valid:
            low, best = qps, last
        else:
            high = qps
    if last is None:
        raise ResnetDeployError(
            f"the peak search has nothing to search: {stopped}",
            options=["find_peak"],
        )
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
