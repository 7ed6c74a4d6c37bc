"""Tune: the deployment configuration to run, found by measurement under a p99 bound.

Triton's Model Analyzer searches instance counts and batch sizes but needs a running Triton and
perf_analyzer; Olive tunes ONNX Runtime session settings. Neither guards accuracy or judges the
result with LoadGen. Here the precisions searched are files that already passed ``optimize``'s
accuracy guard, every candidate is timed in this process (parallel sessions in threads, as a
server runs its instances), and the finalists are judged by LoadGen's Server scenario at the
bound before one of them is written out as ``serve`` flags and a Triton config.

The search prunes instead of trying every combination (minutes, not hours, on a small CPU):

1. default: the first file as ``bench`` runs it (one session, a thread per physical core,
   spinning on) at bench's batch sizes 1, 8, 32, stopping at the first that misses the bound.
   This is what ``gain_vs_default`` is measured against, at the same bound.
2. precision: each other file at batch 1; the fastest precision goes on, and any other
   within PRUNE_MARGIN of it (one short measurement on a busy machine cannot tell them apart).
3. layout: instances x threads that use every core once (2 cores: 1x2, 2x1), spinning on and
   off; on CUDA, instances with and without CUDA graphs instead. The two best go on.
4. batch: doubling the batch of each while p99 stays under the bound and throughput grows by
   at least MIN_GAIN (throughput objective only; batching only adds latency).
5. LoadGen: the finalists, the winner of 1-4, its fastest batch-1 alternative under the bound
   when the winner batches (a batch waits to fill and holds every sample in it, which a closed
   loop does not see), and the default, run LoadGen's Server scenario at the bound as they
   would be served: each instance a session with its own worker thread, all taking
   batches from one queue (as Triton's instances share its dynamic batcher), with the same
   threads, spinning, batch and queue delay. A candidate's p99 is per batch in a closed loop,
   a lower bound on what a server sees; under Poisson arrivals samples queue, and more, slower
   instances queue more. Whether one load is VALID is not the question a deployment asks, but
   how much load stays VALID: ``bench --find-peak``'s bisection finds each one's highest VALID
   target QPS, in at most PEAK_STEPS LoadGen runs of ``loadgen_s`` and LoadGen's query minimum.

What is written out is the finalist with the highest VALID target QPS: the user deploys under
a p99 bound with random arrivals, which LoadGen judges and a closed loop does not. That is the
winner on a tie or when none had a VALID step (the report says so when it is another);
``valid`` is LoadGen's verdict on it, ``gain_vs_default`` stays the closed-loop ratio of
images/s and ``server_gain_vs_default`` is LoadGen's ratio of target QPS, the deployed one's
over the default's.

Half the budget (LOADGEN_SHARE) is kept for stage 5, which also gets what the search left
unspent: each peak search in turn has an equal share of what is left, and no LoadGen run
starts that would end past its share.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from resnet_deploy.environment import Environment, describe_environment, physical_cores
from resnet_deploy.errors import InputError, ResnetDeployError
from resnet_deploy.files import write_text_atomic
from resnet_deploy.model.metadata import ModelMetadata
from resnet_deploy.model.onnxfile import ModelFile, read_model
from resnet_deploy.perf.bench_options import DEFAULT_BATCH_SIZES, BenchOptions
from resnet_deploy.perf.contention import Contention
from resnet_deploy.perf.tune_candidates import (
    SEARCH_CANDIDATES,
    Bound,
    Candidate,
    Search,
    batch_stage,
    default_stage,
    gain,
    layout_stage,
    precision_stage,
    queue_delay_ms,
    same_config,
    serve_flags,
    triton_config,
)
from resnet_deploy.report.records import format_table
from resnet_deploy.runtime.names import CUDA
from resnet_deploy.runtime.providers import resolve_provider
from resnet_deploy.steps import Progress, no_progress

if TYPE_CHECKING:
    from resnet_deploy.perf.loadgen import ScenarioResult

OBJECTIVES = ("throughput", "latency")
DEFAULT_SLO_P99_MS = 15.0  # MLPerf's Server bound for ResNet50, as bench --scenario server
DEFAULT_BUDGET_S = 180.0
LOADGEN_SHARE = 0.5  # of the budget, kept for the LoadGen peak searches (they get any rest too)
PEAK_STEPS = 4  # LoadGen Server runs in each peak search, at most
LOADGEN_S = 5.0


@dataclass(frozen=True)
class TuneOptions:
    int8: Path | None = None  # a second file (any precision ``optimize`` wrote) to search
    slo_p99_ms: float = DEFAULT_SLO_P99_MS
    objective: str = "throughput"  # or "latency": lowest p99 under the bound
    budget_s: float = DEFAULT_BUDGET_S  # the search, the LoadGen peak searches included
    provider: str = "cpu"
    max_batch: int = 32
    loadgen_s: float = LOADGEN_S  # each LoadGen step's minimum duration
    loadgen_min_queries: int | None = None  # each step's; None: LoadGen's early-stopping minimum
    triton_config: Path | None = None  # write the winner's config.pbtxt here
    plot: Path | None = None
    force: bool = False


@dataclass
class TuneReport:
    model: Path
    metadata: ModelMetadata
    provider: str
    cores: int
    slo_p99_ms: float
    objective: str
    budget_s: float
    candidate_s: float  # timed seconds per candidate
    elapsed_s: float
    candidates: list[Candidate]
    default: Candidate | None  # bench's default configuration, best batch under the bound
    winner: Candidate | None
    gain_vs_default: float | None  # winner's images/s over the default's, same bound
    # ... over the default layout (1 session, all cores, spinning) on the winner's own file, at
    # the batches measured for it (bench's 1, 8, 32 for the first file; 1 for the others)
    gain_vs_default_same_precision: float | None
    # LoadGen Server at the bound, each configuration's highest VALID target QPS (None: no step
    # was VALID, or none ran), found as bench --scenario server --find-peak --instances N does
    server_qps: float | None  # the winner's
    default_server_qps: float | None  # the default's
    # the deployed one's over the default's (1.0 when the default is deployed)
    server_gain_vs_default: float | None
    loadgen: ScenarioResult | None  # the winner's peak search, every step listed
    default_loadgen: ScenarioResult | None  # the default's (the winner's, if it is the default)
    # When the winner batches, the best unbatched candidate under the bound is checked too: a
    # batch waits to fill and holds every sample in it, which a closed loop does not see
    batch1: Candidate | None
    batch1_server_qps: float | None
    batch1_loadgen: ScenarioResult | None
    # "winner", "batch 1" or "default": whose serve flags and Triton config these are
    deployed: str | None
    valid: bool | None  # LoadGen's verdict on the one deployed: a VALID step; None: not checked
    serve_flags: str
    triton_config: str
    triton_config_file: Path | None
    contention: Contention
    environment: Environment
    pruned: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_tune_options(model: Path, options: TuneOptions) -> str:
    """Every cheap check before any work; returns the provider's full name."""
    provider = resolve_provider(options.provider)
    if provider not in ("CPUExecutionProvider", CUDA):
        raise InputError("tune searches the cpu and cuda providers", options=["provider"])
    if options.objective not in OBJECTIVES:
        raise InputError(
            f"unknown objective {options.objective!r}; use throughput or latency",
            options=["objective"],
        )
    if not options.slo_p99_ms > 0:
        raise InputError(
            f"the p99 bound must be greater than 0 ms, got {options.slo_p99_ms}",
            options=["slo_p99_ms"],
        )
    if not options.budget_s > 0:
        raise InputError(
            f"the time budget must be greater than 0 s, got {options.budget_s}",
            options=["budget_s"],
        )
    if options.max_batch < 1:
        raise InputError(
            f"the largest batch must be at least 1, got {options.max_batch}", options=["max_batch"]
        )
    if options.int8 is not None and not Path(options.int8).is_file():
        raise InputError(f"{options.int8}: no such file", options=["int8"])
    return provider


def tune(
    model: Path,
    options: TuneOptions = TuneOptions(),
    progress: Progress = no_progress,
) -> TuneReport:
    """Search, pick, check with LoadGen, write out; see the module docstring."""
    started = time.perf_counter()
    provider = check_tune_options(model, options)
    read = [read_model(path, require_metadata=True) for path in (model, options.int8) if path]
    for file in read:
        if file.metadata.batch != "dynamic":
            raise InputError(f"{file.path}: has a fixed batch; tune needs a dynamic batch export")
    models: dict[str, ModelFile] = {}  # by precision, each file read once
    for file in read:
        models.setdefault(file.metadata.precision, file)
    files = {precision: file.path for precision, file in models.items()}
    metadata = read[0].metadata
    cores = physical_cores()
    search_s = options.budget_s * (1 - LOADGEN_SHARE)
    candidate_s = max(0.5, search_s / SEARCH_CANDIDATES / 1.5)
    bound = Bound(options.slo_p99_ms, options.objective, options.max_batch)
    search = Search(provider, metadata, bound, candidate_s, started + search_s, progress)
    base = metadata.precision
    on_gpu = provider == CUDA  # bench's default there: IO binding on

    default = default_stage(search, files[base], base, cores, on_gpu)
    survivors = precision_stage(search, files, base, cores, on_gpu)
    ranked = layout_stage(search, files, survivors, cores)
    if options.objective == "throughput":  # batching only adds latency
        batch_stage(search, ranked[:2])

    under = [c for c in search.candidates if c.meets_slo]
    winner = search.best(under, options.objective) if under else None
    report = TuneReport(
        model=read[0].path,
        metadata=metadata,
        provider=provider,
        cores=cores,
        slo_p99_ms=options.slo_p99_ms,
        objective=options.objective,
        budget_s=options.budget_s,
        candidate_s=candidate_s,
        elapsed_s=0.0,
        candidates=search.candidates,
        default=default,
        winner=winner,
        gain_vs_default=gain(winner, default),
        gain_vs_default_same_precision=None,
        server_qps=None,
        default_server_qps=None,
        server_gain_vs_default=None,
        loadgen=None,
        default_loadgen=None,
        batch1=None,
        batch1_server_qps=None,
        batch1_loadgen=None,
        deployed=None,
        valid=None,
        serve_flags="",
        triton_config="",
        triton_config_file=None,
        contention=search.contention,
        environment=describe_environment(),
        pruned=search.pruned,
    )
    measured = any(c.images_per_s is not None for c in search.candidates)
    if not measured:
        report.notes.append(
            f"nothing was measured: the time budget of {options.budget_s:g} s ran out before "
            f"the first candidate ({candidate_s:.1f} s each); give a larger budget"
        )
    elif winner is None:
        report.notes.append(f"no candidate met the p99 bound of {options.slo_p99_ms:g} ms")
    if winner is not None:
        same = [
            c
            for c in search.candidates
            if c.precision == winner.precision
            and (c.instances, c.threads, c.spin) == (1, cores, True)
            and c.batch_size in DEFAULT_BATCH_SIZES
        ]
        report.gain_vs_default_same_precision = gain(winner, search.best(same, "throughput"))
        report.batch1 = _unbatched_alternative(search.candidates, winner, default)
        _loadgen_stage(report, models, options, started + options.budget_s, progress)
        chosen = _finalists(report)[report.deployed]
        delay_ms = queue_delay_ms(chosen, options.slo_p99_ms)
        report.serve_flags = serve_flags(chosen, delay_ms)
        report.triton_config = triton_config(chosen, models[chosen.precision], delay_ms, provider)
        if options.triton_config is not None:
            write_text_atomic(options.triton_config, report.triton_config, replace=options.force)
            report.triton_config_file = options.triton_config
    if report.contention.unreliable:
        report.notes.append(report.contention.message())
    report.elapsed_s = time.perf_counter() - started
    if options.plot is not None and measured:
        write_plot(report, options.plot, replace=options.force)
    elif options.plot is not None:  # the record still goes out, saying why there is no plot
        report.notes.append(f"{options.plot}: not written, as nothing was measured to plot")
    return report


def _unbatched_alternative(
    candidates: list[Candidate], winner: Candidate, default: Candidate | None
) -> Candidate | None:
    """The fastest batch-1 candidate under the bound, when the winner batches and it is not
    the default (which is checked anyway)."""
    if winner.batch_size == 1:
        return None
    unbatched = [c for c in candidates if c.batch_size == 1 and c.meets_slo]
    best = max(unbatched, key=lambda c: c.images_per_s or 0, default=None)
    if best is None or (default is not None and same_config(best, default)):
        return None
    return best


def _finalists(report: TuneReport) -> dict[str, Candidate]:
    """What LoadGen judges, by name: the winner, its unbatched alternative, the default."""
    assert report.winner is not None
    finalists = {"winner": report.winner}
    if report.batch1 is not None:
        finalists["batch 1"] = report.batch1
    if report.default is not None and not same_config(report.default, report.winner):
        finalists["default"] = report.default
    return finalists


def _loadgen_stage(
    report: TuneReport,
    models: dict[str, ModelFile],
    options: TuneOptions,
    end: float,
    progress: Progress,
) -> None:
    """5. LoadGen Server's peak search at the bound on each finalist in turn, each in an equal
    share of the time left; the one with the highest VALID target QPS is deployed (the winner
    on a tie or when none had a VALID step)."""
    finalists = _finalists(report)
    found: dict[str, ScenarioResult | None] = {}
    progress("LoadGen finalists", 0, len(finalists))
    for index, (name, candidate) in enumerate(finalists.items()):
        budget_s = (end - time.perf_counter()) / (len(finalists) - index)
        model = models[candidate.precision]
        found[name] = _peak_search(report, name, candidate, model, budget_s, options, progress)
        progress("LoadGen finalists", index + 1, len(finalists))
    report.loadgen = found["winner"]
    report.batch1_loadgen = found.get("batch 1")
    default_found = found.get("default", report.loadgen)
    report.default_loadgen = default_found if report.default is not None else None
    peaks = {name: _peak_qps(result) for name, result in found.items()}
    report.server_qps = peaks["winner"]
    report.batch1_server_qps = peaks.get("batch 1")
    report.default_server_qps = _peak_qps(report.default_loadgen)
    best = max(peaks, key=lambda name: peaks[name] or 0)  # the first, the winner, on a tie
    report.deployed = best if peaks[best] else "winner"
    deployed_qps, default_qps = peaks[report.deployed], report.default_server_qps
    if deployed_qps and default_qps:
        report.server_gain_vs_default = deployed_qps / default_qps
    if report.deployed != "winner":
        against = f"{peaks['winner']:g}" if peaks["winner"] else "no VALID step"
        report.notes.append(
            f"LoadGen Server at the bound: the {report.deployed} configuration served more "
            f"queries/s than the winner ({deployed_qps:g} against {against}), so it is what "
            "is written out"
        )
    report.valid = None if found[report.deployed] is None else found[report.deployed].valid


def _peak_search(
    report: TuneReport,
    name: str,
    candidate: Candidate,
    model: ModelFile,
    budget_s: float,
    options: TuneOptions,
    progress: Progress,
) -> ScenarioResult | None:
    """``candidate``'s LoadGen Server peak search at the bound, its instances each with their
    own session as in the search; None, with a note, where no step could run."""
    from resnet_deploy.perf.loadgen import ScenarioOptions, run_scenario

    if budget_s <= 0:
        report.notes.append(f"LoadGen did not check the {name}: the budget was spent")
        return None
    if candidate.cuda_graph:
        report.notes.append(f"LoadGen ran the {name} without a CUDA graph: batches vary in size")
    scenario = ScenarioOptions(
        scenario="server",
        engine=BenchOptions(
            provider=report.provider,
            threads=candidate.threads,
            spin=candidate.spin,
            io_binding=candidate.io_binding,
            baseline="none",
        ),
        instances=candidate.instances,
        latency_bound_ms=options.slo_p99_ms,
        min_duration_s=options.loadgen_s,
        min_queries=options.loadgen_min_queries,
        max_batch=candidate.batch_size,
        batch_timeout_ms=queue_delay_ms(candidate, options.slo_p99_ms),
        find_peak=True,
        peak_steps=PEAK_STEPS,
        peak_budget_s=budget_s,
    )
    progress(
        f"LoadGen Server peak search on the {name}, {candidate.label()}: "
        f"up to {PEAK_STEPS} steps in {budget_s:.0f} s"
    )
    try:
        return run_scenario(model, scenario, progress=progress)
    except InputError:
        raise
    except ResnetDeployError as exc:  # no step could run (budget, bound): a result, not a crash
        report.notes.append(f"LoadGen did not check the {name}: {exc}")
        return None


def _peak_qps(result: ScenarioResult | None) -> float | None:
    """The highest VALID target QPS of a peak search; None when no step was VALID."""
    return result.target_qps if result is not None and result.valid else None


def format_report(report: TuneReport) -> str:
    """Every candidate, what was pruned, the winner against the default, LoadGen's verdict."""
    lines = [
        f"{report.model}: {report.metadata.arch}, {report.provider}, {report.cores} cores, "
        f"p99 bound {report.slo_p99_ms:g} ms, objective {report.objective}, "
        f"{report.candidate_s:.1f} s per candidate, {report.elapsed_s:.0f} s in all",
        "",
    ]
    headers = ["stage", "configuration", "runs", "images/s", "p50 ms", "p99 ms", "bound"]
    rows = []
    for c in report.candidates:
        mark = "ok" if c.meets_slo else ("-" if c.error else "over")
        numbers = [c.images_per_s, c.p50_ms, c.p99_ms]
        rows.append([c.stage, c.label(), c.runs, *("-" if v is None else v for v in numbers), mark])
    lines.append(format_table(headers, rows))
    if report.pruned:
        lines += ["", "pruned:", *(f"  {text}" for text in report.pruned)]
    lines.append("")
    if report.default is not None:
        d = report.default
        lines.append(f"default (bench): {d.label()}: {d.images_per_s:.1f} images/s")
    if report.winner is not None:
        w = report.winner
        lines.append(f"winner: {w.label()}: {w.images_per_s:.1f} images/s, p99 {w.p99_ms:.2f} ms")
        if report.gain_vs_default is not None:
            star = " (UNRELIABLE: machine busy)" if report.contention.unreliable else ""
            gain = report.gain_vs_default
            lines.append(f"gain over the default at the same bound, closed loop: {gain:.2f}x{star}")
        lines += _loadgen_lines(report)
        lines += ["", f"run it (the {report.deployed}):", f"  {report.serve_flags}"]
        if report.triton_config_file is not None:
            lines.append(f"  Triton config: {report.triton_config_file}")
    lines.append(report.contention.describe())
    if report.notes:
        lines += ["", *report.notes]
    return "\n".join(lines)


def _loadgen_lines(report: TuneReport) -> list[str]:
    """Each peak search's highest VALID target QPS and its steps, and the verdict deployed."""
    searches = {
        "winner": report.loadgen,
        "batch 1": report.batch1_loadgen,
        "default": report.default_loadgen,
    }
    rows, stops = [], []
    for name in _finalists(report):
        result = searches[name]
        if name == "winner" and "default" not in _finalists(report) and report.default:
            name = "winner, the default"
        if result is None:
            rows.append([name, "-", "-", "not checked (see below)"])
            continue
        steps = ", ".join(
            f"{s.target_qps:g} {'VALID' if s.valid else 'INVALID'}" for s in result.peak_search
        )
        best = _peak_qps(result)
        rows.append([name, "-" if best is None else best, result.p99_ms if best else "-", steps])
        if result.peak_stopped:
            stops.append(f"  {name}'s search stopped early: {result.peak_stopped}")
    lines = [
        "",
        f"LoadGen Server at the p99 bound of {report.slo_p99_ms:g} ms, highest VALID target QPS:",
        format_table(["", "queries/s", "p99 ms", "steps (target QPS)"], rows),
        *stops,
    ]
    if report.batch1 is not None:
        lines.append(f"batch 1: {report.batch1.label()}, the winner's unbatched alternative")
    if report.server_gain_vs_default is not None:
        gain = report.server_gain_vs_default
        lines.append(f"gain of the {report.deployed} over the default under LoadGen: {gain:.2f}x")
    if report.valid is not None:
        deployed = searches[report.deployed]
        verdict = "VALID" if report.valid else "INVALID: " + "; ".join(deployed.invalid_reasons[:2])
        lines.append(f"LoadGen's verdict on the {report.deployed}: {verdict}")
    return lines


def write_plot(report: TuneReport, path: Path, *, replace: bool = False) -> None:
    """Throughput against p99 for every candidate measured, the bound and the winner marked."""
    from resnet_deploy.report.charts import EAGER, INT8, OPENVINO, ORT, Marker, Series, tune_png

    done = [c for c in report.candidates if c.images_per_s is not None]
    if not done:
        raise InputError("nothing to plot: no candidate was measured")
    groups = []
    styles = (("default", EAGER), ("precision", INT8), ("layout", ORT), ("batch", OPENVINO))
    for stage, style in styles:
        chosen = [c for c in done if c.stage == stage]
        if chosen:
            xs, ys = [c.p99_ms for c in chosen], [c.images_per_s for c in chosen]
            groups.append(Series(stage, xs, ys, style))
    w = report.winner
    winner = Marker(w.p99_ms, w.label(), y=w.images_per_s) if w is not None else None
    title = f"tune {report.model.name}: {report.provider}, {report.cores} cores"
    if report.contention.unreliable:
        title += "\n" + report.contention.message()
    tune_png(
        path, groups=groups, bound=report.slo_p99_ms, winner=winner, title=title, replace=replace
    )
