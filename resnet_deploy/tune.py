"""Tune: the deployment configuration to run, found by measurement under a p99 bound.

Triton's Model Analyzer searches instance counts and batch sizes but needs a running Triton and
perf_analyzer; Olive tunes ONNX Runtime session settings. Neither guards accuracy or judges the
result with LoadGen. Here the precisions searched are files that already passed ``optimize``'s
accuracy guard, every candidate is timed in this process (parallel sessions in threads, as a
server runs its instances), and the winner is checked with LoadGen's Server scenario at the
bound before it is written out as ``serve`` flags and a Triton config.

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

A candidate's p99 is its per-batch latency in a closed loop, a lower bound on what a server
adds (queueing); LoadGen's Server check measures the real one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from resnet_deploy.bench import CUDA, DEFAULT_BATCH_SIZES, BenchOptions, summarize
from resnet_deploy.contention import Contention, CpuMonitor
from resnet_deploy.environment import Environment, describe_environment, physical_cores
from resnet_deploy.errors import InputError, ResnetDeployError
from resnet_deploy.files import atomic_output, write_text_atomic
from resnet_deploy.metadata import ModelMetadata
from resnet_deploy.onnxfile import load_with_metadata
from resnet_deploy.providers import (
    SPINNING,
    SessionConfig,
    create_session,
    cuda_provider_options,
    input_dtype,
    resolve_provider,
)
from resnet_deploy.report import format_table
from resnet_deploy.runners import OrtRunner

if TYPE_CHECKING:
    from resnet_deploy.loadgen import ScenarioResult

OBJECTIVES = ("throughput", "latency")
DEFAULT_SLO_P99_MS = 15.0  # MLPerf's Server bound for ResNet50, as bench --scenario server
DEFAULT_BUDGET_S = 180.0
MIN_GAIN = 0.03  # a larger batch must add this much throughput to be worth its latency
PRUNE_MARGIN = 0.10  # a precision this close to the best at batch 1 is searched further too
SERVER_LOAD = 0.8  # LoadGen's Server check runs at this share of the winner's throughput
MAX_QUEUE_DELAY_MS = 2.0  # the batcher's wait, as bench --scenario server's default
LOADGEN_S = 5.0
SEARCH_CANDIDATES = 14  # about how many candidates a search measures, to size each one


@dataclass(frozen=True)
class TuneOptions:
    int8: Path | None = None  # a second file (any precision ``optimize`` wrote) to search
    slo_p99_ms: float = DEFAULT_SLO_P99_MS
    objective: str = "throughput"  # or "latency": lowest p99 under the bound
    budget_s: float = DEFAULT_BUDGET_S  # the search, the LoadGen check included
    provider: str = "cpu"
    max_batch: int = 32
    loadgen_s: float = LOADGEN_S  # LoadGen check's minimum duration
    loadgen_min_queries: int | None = None  # None: LoadGen's early-stopping minimum
    triton_config: Path | None = None  # write the winner's config.pbtxt here
    plot: Path | None = None
    force: bool = False


@dataclass
class Candidate:
    """One configuration and what it measured; numbers are None where it failed or was cut."""

    stage: str  # default, precision, layout, batch
    precision: str
    model: Path
    instances: int
    threads: int  # intra-op threads of each instance
    batch_size: int
    spin: bool
    io_binding: bool = False  # CUDA: inputs and outputs stay on the device
    cuda_graph: bool = False  # CUDA: replay a captured graph (needs IO binding)
    runs: int = 0
    images_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    other_cores: float | None = None  # other processes' CPU use while it was timed
    meets_slo: bool = False
    error: str | None = None

    def label(self) -> str:
        extra = ", IO binding" if self.io_binding else ""
        extra += ", CUDA graph" if self.cuda_graph else ""
        return (
            f"{self.precision} {self.instances}x{self.threads} threads batch {self.batch_size} "
            f"spin {'on' if self.spin else 'off'}{extra}"
        )


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
    valid: bool | None  # LoadGen Server's verdict on the winner; None: not checked
    loadgen: ScenarioResult | None  # that check, as bench --scenario server reports it
    loadgen_target_qps: float | None
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
        raise InputError("tune searches the cpu and cuda providers")
    if options.objective not in OBJECTIVES:
        raise InputError(f"unknown objective {options.objective!r}; use throughput or latency")
    if not options.slo_p99_ms > 0:
        raise InputError(f"--slo-p99-ms must be greater than 0, got {options.slo_p99_ms}")
    if not options.budget_s > 0:
        raise InputError(f"--budget-s must be greater than 0, got {options.budget_s}")
    if options.max_batch < 1:
        raise InputError(f"--max-batch must be at least 1, got {options.max_batch}")
    if options.int8 is not None and not Path(options.int8).is_file():
        raise InputError(f"{options.int8}: no such file")
    return provider


def tune(
    model: Path,
    options: TuneOptions = TuneOptions(),
    progress: Callable[[str], None] = lambda step: None,
) -> TuneReport:
    """Search, pick, check with LoadGen, write out; see the module docstring."""
    started = time.perf_counter()
    provider = check_tune_options(model, options)
    model = Path(model)
    files = {}
    for path in (model, options.int8):
        if path is not None:
            _, meta = load_with_metadata(Path(path))
            if meta.batch != "dynamic":
                raise InputError(f"{path}: has a fixed batch; tune needs a dynamic batch export")
            files.setdefault(meta.precision, Path(path))
    _, metadata = load_with_metadata(model)
    cores = physical_cores()
    candidate_s = max(0.5, (options.budget_s - options.loadgen_s * 2) / SEARCH_CANDIDATES / 1.5)
    search = _Search(provider, metadata, options, candidate_s, started, progress)
    base = metadata.precision
    on_gpu = provider == CUDA  # bench's default there: IO binding on

    default = _default_stage(search, files[base], base, cores, on_gpu)
    survivors = _precision_stage(search, files, base, cores, on_gpu)
    ranked = _layout_stage(search, files, survivors, cores)
    if options.objective == "throughput":  # batching only adds latency
        _batch_stage(search, ranked[:2])

    under = [c for c in search.candidates if c.meets_slo]
    winner = search.best(under, options.objective) if under else None
    report = TuneReport(
        model=model,
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
        gain_vs_default=_gain(winner, default),
        gain_vs_default_same_precision=None,
        valid=None,
        loadgen=None,
        loadgen_target_qps=None,
        serve_flags="",
        triton_config="",
        triton_config_file=None,
        contention=search.contention,
        environment=describe_environment(),
        pruned=search.pruned,
    )
    if winner is None:
        report.notes.append(f"no candidate met the p99 bound of {options.slo_p99_ms:g} ms")
    else:
        same = [
            c
            for c in search.candidates
            if c.precision == winner.precision
            and (c.instances, c.threads, c.spin) == (1, cores, True)
            and c.batch_size in DEFAULT_BATCH_SIZES
        ]
        report.gain_vs_default_same_precision = _gain(winner, search.best(same, "throughput"))
        delay_ms = queue_delay_ms(winner, options.slo_p99_ms)
        report.serve_flags = serve_flags(winner, delay_ms)
        report.triton_config = triton_config(winner, delay_ms, provider)
        _loadgen_check(report, winner, delay_ms, options, progress)
        if options.triton_config is not None:
            write_text_atomic(options.triton_config, report.triton_config, replace=options.force)
            report.triton_config_file = options.triton_config
    if report.contention.unreliable:
        report.notes.append(report.contention.message())
    report.elapsed_s = time.perf_counter() - started
    if options.plot is not None:
        write_plot(report, options.plot, replace=options.force)
    return report


class _Search:
    """Measures candidates within the budget and remembers every one."""

    def __init__(
        self,
        provider: str,
        metadata: ModelMetadata,
        options: TuneOptions,
        candidate_s: float,
        started: float,
        progress: Callable[[str], None],
    ) -> None:
        self.provider = provider
        self.metadata = metadata
        self.options = options
        self.candidate_s = candidate_s
        self.deadline = started + options.budget_s - options.loadgen_s * 2
        self.progress = progress
        self.candidates: list[Candidate] = []
        self.pruned: list[str] = []
        self.contention = Contention(cores=1)
        self._first = True

    def seen(self, candidate: Candidate) -> bool:
        return any(_same(candidate, c) for c in self.candidates)

    def measure(self, candidate: Candidate) -> Candidate:
        for earlier in self.candidates:
            if _same(candidate, earlier):
                return earlier
        if time.perf_counter() > self.deadline:
            candidate.error = "not measured: the budget was spent"
            self.pruned.append(f"{candidate.label()}: budget spent")
            self.candidates.append(candidate)
            return candidate
        self.progress(f"timing {candidate.label()}")
        try:
            contention = time_candidate(
                candidate, self.provider, self.metadata, self.candidate_s, self.candidate_s / 3
            )
        except ResnetDeployError:
            raise
        except Exception as exc:  # out of memory at a large batch: a result, not a crash
            candidate.error = f"{type(exc).__name__}: {str(exc).strip().partition(chr(10))[0]}"
        else:
            self.contention = contention if self._first else self.contention.merge(contention)
            self._first = False
            candidate.meets_slo = candidate.p99_ms <= self.options.slo_p99_ms
            self.progress(
                f"  {candidate.images_per_s:.1f} images/s, p99 {candidate.p99_ms:.2f} ms"
                + ("" if candidate.meets_slo else " (over the bound)")
            )
        self.candidates.append(candidate)
        return candidate

    @staticmethod
    def key(objective: str) -> Callable[[Candidate], tuple]:
        if objective == "latency":
            return lambda c: (-c.p99_ms, c.images_per_s)
        return lambda c: (c.images_per_s, -c.p99_ms)

    def best(self, candidates: list[Candidate], objective: str) -> Candidate | None:
        usable = [c for c in candidates if c.meets_slo]
        return max(usable, key=self.key(objective)) if usable else None


def _default_stage(
    search: _Search, path: Path, precision: str, cores: int, on_gpu: bool
) -> Candidate | None:
    """1. The file as bench runs it by default, at bench's batch sizes up to the first that
    misses the bound; the best of them is what gains are measured against."""
    for batch in DEFAULT_BATCH_SIZES:
        if batch > search.options.max_batch:
            break
        first = Candidate("default", precision, path, 1, cores, batch, True, on_gpu)
        if not search.measure(first).meets_slo:
            break
    return search.best([c for c in search.candidates if c.stage == "default"], "throughput")


def _precision_stage(
    search: _Search, files: dict[str, Path], base: str, cores: int, on_gpu: bool
) -> list[str]:
    """2. Every other file at batch 1; the precisions worth searching further, best first."""
    for other, path in files.items():
        if other != base:
            search.measure(Candidate("precision", other, path, 1, cores, 1, True, on_gpu))
    firsts = [c for c in search.candidates if c.batch_size == 1 and c.meets_slo]
    if not firsts:
        return [base]
    best = search.best(firsts, search.options.objective)
    close = [c for c in firsts if _close(c, best, search.options.objective)]
    survivors = [best.precision] + [c.precision for c in close if c is not best]
    for other in files:
        if other not in survivors:
            search.pruned.append(
                f"{other}: over {PRUNE_MARGIN:.0%} behind {best.precision} at batch 1"
            )
    return survivors


def _layout_stage(
    search: _Search, files: dict[str, Path], survivors: list[str], cores: int
) -> list[Candidate]:
    """3. Instances x threads using each core once, spinning on and off (CUDA: instances x IO
    binding and CUDA graphs) at batch 1; those under the bound, best first."""
    layouts = []
    for precision in survivors:
        path = files[precision]
        for instances in range(1, cores + 1):
            if search.provider == CUDA and instances <= 2:
                for binding, graph in ((False, False), (True, False), (True, True)):
                    layouts.append(
                        Candidate("layout", precision, path, instances, 1, 1, True, binding, graph)
                    )
            elif search.provider != CUDA and cores % instances == 0:
                threads = cores // instances
                for spin in (True, False):
                    layout = Candidate("layout", precision, path, instances, threads, 1, spin)
                    layouts.append(layout)
    measured = []
    for layout in layouts:
        done = search.measure(layout)
        if done not in measured:
            measured.append(done)
    under = [c for c in measured if c.meets_slo]
    ranked = sorted(under, key=search.key(search.options.objective), reverse=True)
    for loser in ranked[2:]:
        search.pruned.append(f"{loser.label()}: not among the two best layouts at batch 1")
    return ranked


def _batch_stage(search: _Search, layouts: list[Candidate]) -> None:
    """4. Double each layout's batch while p99 stays under the bound and throughput grows."""
    for layout in layouts:
        previous = layout
        batch = layout.batch_size * 2
        while batch <= search.options.max_batch:
            done = search.measure(replace(layout, stage="batch", batch_size=batch, runs=0))
            if not done.meets_slo:
                search.pruned.append(f"{layout.label()}: batch {batch} misses the bound")
                break
            if done.images_per_s < previous.images_per_s * (1 + MIN_GAIN):
                search.pruned.append(
                    f"{layout.label()}: batch {batch} adds under {MIN_GAIN:.0%} throughput"
                )
                break
            previous, batch = done, batch * 2


def _same(a: Candidate, b: Candidate) -> bool:
    fields_ = ("model", "instances", "threads", "batch_size", "spin", "io_binding", "cuda_graph")
    return all(getattr(a, name) == getattr(b, name) for name in fields_)


def _close(candidate: Candidate, best: Candidate, objective: str) -> bool:
    """Within PRUNE_MARGIN of the best: too close to drop on one short measurement."""
    if objective == "latency":
        return candidate.p99_ms <= best.p99_ms * (1 + PRUNE_MARGIN)
    return candidate.images_per_s >= best.images_per_s * (1 - PRUNE_MARGIN)


def _gain(winner: Candidate | None, default: Candidate | None) -> float | None:
    if winner is None or default is None or not default.images_per_s:
        return None
    return winner.images_per_s / default.images_per_s


def time_candidate(
    candidate: Candidate,
    provider: str,
    metadata: ModelMetadata,
    seconds: float,
    warmup_s: float,
) -> Contention:
    """Run ``candidate.instances`` sessions at once, each in its own thread, for ``seconds``
    after a warm-up; fill in the candidate's throughput and latency percentiles."""
    options = {}
    if provider == CUDA:
        options = cuda_provider_options(cuda_graph=candidate.cuda_graph)
    config = SessionConfig(
        provider=provider,
        provider_options=options,
        intra_op_threads=candidate.threads,
        graph_optimization="all",
        session_config_entries={SPINNING: "1" if candidate.spin else "0"},
    )
    device = "cuda" if candidate.io_binding else None
    runners = [
        OrtRunner(create_session(candidate.model, config), binding_device=device)
        for _ in range(candidate.instances)
    ]
    size = metadata.image_size
    dtype = input_dtype(runners[0].session)
    array = np.random.default_rng(0).standard_normal((candidate.batch_size, 3, size, size))
    array = array.astype(dtype)
    start = threading.Barrier(candidate.instances + 1)
    times: list[list[float]] = [[] for _ in runners]
    errors: list[BaseException] = []

    def serve(index: int) -> None:
        runner = runners[index]
        try:
            feed = runner.place(array)
            until = time.perf_counter() + warmup_s
            while time.perf_counter() < until:
                runner.infer(feed)
        except BaseException as exc:  # reported once every thread has stopped
            errors.append(exc)
        start.wait()
        end = time.perf_counter() + seconds
        while not errors and time.perf_counter() < end:
            begin = time.perf_counter()
            runner.infer(feed)
            times[index].append(time.perf_counter() - begin)

    workers = [threading.Thread(target=serve, args=(i,), daemon=True) for i in range(len(runners))]
    for worker in workers:
        worker.start()
    start.wait()
    with CpuMonitor() as monitor:
        began = time.perf_counter()
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - began
    for runner in runners:
        runner.__exit__()
    if errors:
        raise errors[0]
    every = [t for per in times for t in per]
    stats = summarize(every, wall, candidate.batch_size)
    candidate.runs = stats["runs"]
    candidate.images_per_s = stats["images_per_s"]
    candidate.p50_ms = stats["p50_ms"]
    candidate.p99_ms = stats["p99_ms"]
    candidate.other_cores = monitor.result.other_cores
    return monitor.result


def queue_delay_ms(winner: Candidate, slo_p99_ms: float) -> float:
    """How long a batcher may wait for a batch to fill: nothing for batch 1, else at most
    MAX_QUEUE_DELAY_MS and half the room the bound leaves above the batch's own p99."""
    if winner.batch_size == 1:
        return 0.0
    return max(0.0, min(MAX_QUEUE_DELAY_MS, (slo_p99_ms - winner.p99_ms) / 2))


def serve_flags(winner: Candidate, delay_ms: float) -> str:
    return (
        f"resnet-deploy serve {winner.model} --max-batch-size {winner.batch_size} "
        f"--max-queue-delay-us {round(delay_ms * 1e3)} --instances {winner.instances} "
        f"--threads {winner.threads}"
    )


def triton_config(winner: Candidate, delay_ms: float, provider: str) -> str:
    """The winner as a Triton config.pbtxt, built and checked by resnet_deploy.triton."""
    from resnet_deploy.onnxfile import load_onnx
    from resnet_deploy.triton import (
        TritonOptions,
        build_config,
        render_config,
        resolve_batching,
        tensor_specs,
    )

    inputs, outputs = tensor_specs(load_onnx(winner.model))
    options = TritonOptions(
        repo=winner.model.parent,
        max_batch_size=winner.batch_size,
        preferred_batch_sizes=(winner.batch_size,) if winner.batch_size > 1 else (),
        max_queue_delay_us=round(delay_ms * 1e3),
        instances=winner.instances,
        kind="gpu" if provider == CUDA else "cpu",
        warmup=True,
    )
    max_batch, preferred = resolve_batching(options, inputs, outputs)
    name = winner.model.name.removesuffix(".onnx").replace(".", "_")
    config = build_config(name, inputs, outputs, options, max_batch, preferred, set())
    # Triton's ONNX Runtime backend reads its session threads from these parameters.
    config.parameters["intra_op_thread_count"].string_value = str(winner.threads)
    config.parameters["inter_op_thread_count"].string_value = "1"
    return render_config(config, "config.pbtxt")


def _loadgen_check(
    report: TuneReport,
    winner: Candidate,
    delay_ms: float,
    options: TuneOptions,
    progress: Callable[[str], None],
) -> None:
    """LoadGen's Server scenario at the bound, on the winner (one instance of it)."""
    from resnet_deploy.loadgen import ScenarioOptions, run_scenario

    target = float(f"{SERVER_LOAD * winner.images_per_s / winner.instances:.3g}")
    report.loadgen_target_qps = target
    if winner.cuda_graph:
        report.notes.append("LoadGen checked it without a CUDA graph: its batches vary in size")
    if winner.instances > 1:
        report.notes.append(
            f"LoadGen checked one of the {winner.instances} instances at its share of the load "
            f"({target:g} queries/s): the LoadGen SUT serves one session"
        )
    scenario = ScenarioOptions(
        scenario="server",
        engine=BenchOptions(
            provider=report.provider,
            threads=winner.threads,
            spin=winner.spin,
            io_binding=winner.io_binding or report.provider != CUDA,
            baseline="none",
        ),
        target_qps=target,
        latency_bound_ms=options.slo_p99_ms,
        min_duration_s=options.loadgen_s,
        min_queries=options.loadgen_min_queries,
        max_batch=winner.batch_size,
        batch_timeout_ms=delay_ms,
    )
    progress(f"checking the winner with LoadGen Server at {target:g} queries/s")
    result = run_scenario(winner.model, scenario, progress=progress)
    report.loadgen = result
    report.valid = result.valid


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
            lines.append(f"gain over the default at the same bound: {gain:.2f}x{star}")
        if report.valid is not None:
            lines.append(
                f"LoadGen Server at {report.loadgen_target_qps:g} queries/s, p99 bound "
                f"{report.slo_p99_ms:g} ms: {'VALID' if report.valid else 'INVALID'}"
                + ("" if report.valid else f" ({'; '.join(report.loadgen.invalid_reasons[:2])})")
            )
        lines += ["", "run it:", f"  {report.serve_flags}"]
        if report.triton_config_file is not None:
            lines.append(f"  Triton config: {report.triton_config_file}")
    lines.append(report.contention.describe())
    if report.notes:
        lines += ["", *report.notes]
    return "\n".join(lines)


def write_plot(report: TuneReport, path: Path, *, replace: bool = False) -> None:
    """Throughput against p99 for every candidate measured, the bound and the winner marked."""
    from matplotlib.figure import Figure

    done = [c for c in report.candidates if c.images_per_s is not None]
    if not done:
        raise InputError("nothing to plot: no candidate was measured")
    fig = Figure(figsize=(8, 5), layout="constrained")
    axes = fig.subplots()
    for stage, marker in (("default", "s"), ("precision", "D"), ("layout", "o"), ("batch", "^")):
        chosen = [c for c in done if c.stage == stage]
        if chosen:
            p99 = [c.p99_ms for c in chosen]
            axes.scatter(p99, [c.images_per_s for c in chosen], marker=marker, label=stage)
    axes.axvline(report.slo_p99_ms, color="r", linestyle="--", label="p99 bound")
    if report.winner is not None:
        w = report.winner
        point = (w.p99_ms, w.images_per_s)
        axes.scatter(*point, s=200, facecolors="none", edgecolors="k", label="winner")
        axes.annotate(w.label(), point, fontsize=7, xytext=(5, -12), textcoords="offset points")
    axes.set_xlabel("p99 latency per batch (ms)")
    axes.set_ylabel("images/s")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    title = f"tune {report.model.name}: {report.provider}, {report.cores} cores"
    if report.contention.unreliable:
        title += "\n" + report.contention.message()
    fig.suptitle(title, fontsize=9)
    with atomic_output(path, replace=replace) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
