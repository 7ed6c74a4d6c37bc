"""Tune's candidates: the search over them (stages 1-4 of ``tune``: measured in this process,
pruned stage by stage under the p99 bound within the search's share of the budget, see
``tune``'s docstring), and one of them written out as ``serve`` flags and a Triton config.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.model.metadata import ModelMetadata
from resnet_deploy.model.onnxfile import ModelFile
from resnet_deploy.perf.bench_options import DEFAULT_BATCH_SIZES
from resnet_deploy.perf.contention import Contention
from resnet_deploy.perf.timing import summarize, time_parallel
from resnet_deploy.runtime.names import CUDA, SPINNING
from resnet_deploy.runtime.providers import (
    SessionConfig,
    create_session,
    cuda_provider_options,
    input_dtype,
)
from resnet_deploy.runtime.runners import OrtRunner
from resnet_deploy.steps import Progress

MIN_GAIN = 0.03  # a larger batch must add this much throughput to be worth its latency
PRUNE_MARGIN = 0.10  # a precision this close to the best at batch 1 is searched further too
SEARCH_CANDIDATES = 14  # about how many candidates a search measures, to size each one
MAX_QUEUE_DELAY_MS = 2.0  # the batcher's wait, as bench --scenario server's default


@dataclass(frozen=True)
class Bound:
    """What the search is asked for: the p99 bound, the objective under it, the largest batch."""

    slo_p99_ms: float
    objective: str  # "throughput" or "latency"
    max_batch: int


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


class Search:
    """Measures candidates within the budget and remembers every one."""

    def __init__(
        self,
        provider: str,
        metadata: ModelMetadata,
        bound: Bound,
        candidate_s: float,
        deadline: float,
        progress: Progress,
    ) -> None:
        self.provider = provider
        self.metadata = metadata
        self.bound = bound
        self.candidate_s = candidate_s
        self.deadline = deadline
        self.progress = progress
        self.candidates: list[Candidate] = []
        self.pruned: list[str] = []
        self.contention = Contention(cores=1)
        self._first = True

    def seen(self, candidate: Candidate) -> bool:
        return any(same_config(candidate, c) for c in self.candidates)

    def measure(self, candidate: Candidate) -> Candidate:
        for earlier in self.candidates:
            if same_config(candidate, earlier):
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
            candidate.meets_slo = candidate.p99_ms <= self.bound.slo_p99_ms
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


def default_stage(
    search: Search, path: Path, precision: str, cores: int, on_gpu: bool
) -> Candidate | None:
    """1. The file as bench runs it by default, at bench's batch sizes up to the first that
    misses the bound; the best of them is what gains are measured against."""
    for batch in DEFAULT_BATCH_SIZES:
        if batch > search.bound.max_batch:
            break
        first = Candidate("default", precision, path, 1, cores, batch, True, on_gpu)
        if not search.measure(first).meets_slo:
            break
    return search.best([c for c in search.candidates if c.stage == "default"], "throughput")


def precision_stage(
    search: Search, files: dict[str, Path], base: str, cores: int, on_gpu: bool
) -> list[str]:
    """2. Every other file at batch 1; the precisions worth searching further, best first."""
    for other, path in files.items():
        if other != base:
            search.measure(Candidate("precision", other, path, 1, cores, 1, True, on_gpu))
    firsts = [c for c in search.candidates if c.batch_size == 1 and c.meets_slo]
    if not firsts:
        return [base]
    best = search.best(firsts, search.bound.objective)
    close = [c for c in firsts if _close(c, best, search.bound.objective)]
    survivors = [best.precision] + [c.precision for c in close if c is not best]
    for other in files:
        if other not in survivors:
            search.pruned.append(
                f"{other}: over {PRUNE_MARGIN:.0%} behind {best.precision} at batch 1"
            )
    return survivors


def layout_stage(
    search: Search, files: dict[str, Path], survivors: list[str], cores: int
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
    search.progress("layout candidates", 0, len(layouts))
    for count, layout in enumerate(layouts, 1):
        done = search.measure(layout)
        if done not in measured:
            measured.append(done)
        search.progress("layout candidates", count, len(layouts))
    under = [c for c in measured if c.meets_slo]
    ranked = sorted(under, key=search.key(search.bound.objective), reverse=True)
    for loser in ranked[2:]:
        search.pruned.append(f"{loser.label()}: not among the two best layouts at batch 1")
    return ranked


def batch_stage(search: Search, layouts: list[Candidate]) -> None:
    """4. Double each layout's batch while p99 stays under the bound and throughput grows."""
    for layout in layouts:
        previous = layout
        batch = layout.batch_size * 2
        while batch <= search.bound.max_batch:
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


def same_config(a: Candidate, b: Candidate) -> bool:
    fields_ = ("model", "instances", "threads", "batch_size", "spin", "io_binding", "cuda_graph")
    return all(getattr(a, name) == getattr(b, name) for name in fields_)


def _close(candidate: Candidate, best: Candidate, objective: str) -> bool:
    """Within PRUNE_MARGIN of the best: too close to drop on one short measurement."""
    if objective == "latency":
        return candidate.p99_ms <= best.p99_ms * (1 + PRUNE_MARGIN)
    return candidate.images_per_s >= best.images_per_s * (1 - PRUNE_MARGIN)


def gain(winner: Candidate | None, default: Candidate | None) -> float | None:
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
    try:
        every, wall, contention = time_parallel(
            runners, array.astype(dtype), seconds=seconds, warmup_s=warmup_s
        )
    finally:
        for runner in runners:
            runner.__exit__()
    stats = summarize(every, wall, candidate.batch_size)
    candidate.runs = stats["runs"]
    candidate.images_per_s = stats["images_per_s"]
    candidate.p50_ms = stats["p50_ms"]
    candidate.p99_ms = stats["p99_ms"]
    candidate.other_cores = contention.other_cores
    return contention


def queue_delay_ms(candidate: Candidate, slo_p99_ms: float) -> float:
    """How long a batcher may wait for a batch to fill: nothing for batch 1, else at most
    MAX_QUEUE_DELAY_MS and half the room the bound leaves above the batch's own p99."""
    if candidate.batch_size == 1:
        return 0.0
    return max(0.0, min(MAX_QUEUE_DELAY_MS, (slo_p99_ms - candidate.p99_ms) / 2))


def serve_flags(candidate: Candidate, delay_ms: float) -> str:
    return (
        f"resnet-deploy serve {candidate.model} --max-batch-size {candidate.batch_size} "
        f"--max-queue-delay-us {round(delay_ms * 1e3)} --instances {candidate.instances} "
        f"--threads {candidate.threads} {'--spin' if candidate.spin else '--no-spin'}"
    )


def triton_config(winner: Candidate, model: ModelFile, delay_ms: float, provider: str) -> str:
    """A configuration (``model``: its file, as read) as a Triton config.pbtxt, built and
    checked by serving.repository."""
    from resnet_deploy.serving.repository import (
        TritonOptions,
        build_config,
        render_config,
        resolve_batching,
        tensor_specs,
    )

    inputs, outputs = tensor_specs(model.proto)
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
