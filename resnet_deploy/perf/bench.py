"""Bench: latency and throughput of an exported model on ONNX Runtime, beside PyTorch eager.

Measured the way trtexec and onnxruntime_perf_test measure: a warm-up apart from the timed
loop, every run timed on its own (the device synchronized before the clock is read), latency
as percentiles, throughput as images over the loop's wall time. Each batch size gets a fresh
session and its own warm-up: cuDNN's exhaustive search and ONNX Runtime's memory arena both
tune themselves to the first shapes they see. The eager baseline runs after the ONNX Runtime
session is closed, so spinning ONNX Runtime threads never steal the cores it needs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnet_deploy.environment import Environment, describe_environment, physical_cores
from resnet_deploy.errors import InputError, ResnetDeployError
from resnet_deploy.files import atomic_output, sha256_of
from resnet_deploy.model.metadata import ModelMetadata
from resnet_deploy.model.onnxfile import load_with_metadata
from resnet_deploy.model.resnet import rebuild_model
from resnet_deploy.perf.contention import BUSY_SHARE, Contention, CpuMonitor
from resnet_deploy.report.records import format_table
from resnet_deploy.runtime.int8target import require_target
from resnet_deploy.runtime.memory import activation_bytes, check_fits, input_bytes
from resnet_deploy.runtime.names import CPU, CUDA, SPINNING, TENSORRT
from resnet_deploy.runtime.openvino import ENGINES, OpenVinoRunner, import_openvino
from resnet_deploy.runtime.placement import Placement, check_placement
from resnet_deploy.runtime.providers import (
    SessionConfig,
    create_session,
    cuda_provider_options,
    input_dtype,
    provider_options_used,
    resolve_provider,
    tensorrt_build_note,
    tensorrt_provider_options,
    trt_profile,
    with_trt_profile,
)
from resnet_deploy.runtime.runners import OrtRunner, TorchRunner

DEFAULT_BATCH_SIZES = (1, 8, 32)
DEFAULT_WARMUP_S = 2.0
DEFAULT_DURATION_S = 5.0
CV_WARNING = 0.10  # run-to-run spread above which a result is flagged unstable
# The columns every latency table starts with (`bench` and `bench --url`)
LATENCY_HEADERS = (
    "batch",
    "runs",
    "mean ms",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "cv",
    "images/s",
)
PERCENTILE_MIN_RUNS = {"p90": 10, "p95": 20, "p99": 100}  # fewer runs: it is just the maximum
TORCH_FIELDS = (
    "runs",
    "mean_ms",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "cv",
    "images_per_s",
    "other_cores",
)


@dataclass(frozen=True)
class BenchOptions:
    provider: str = "cpu"
    batch_sizes: tuple[int, ...] | None = None  # None: DEFAULT_BATCH_SIZES or the fixed batch
    warmup_runs: int | None = None  # exactly N runs, or
    warmup_s: float | None = None  # runs for S seconds; neither: DEFAULT_WARMUP_S
    iterations: int | None = None  # exactly N timed runs, or
    duration_s: float | None = None  # timed runs for S seconds; neither: DEFAULT_DURATION_S
    threads: int | None = None  # intra-op threads, for eager too; None: the physical cores
    spin: bool = True  # ONNX Runtime's default: idle threads spin, trading CPU for latency
    io_binding: bool = True  # CUDA/TensorRT: inputs and outputs stay on the device
    cuda_graph: bool = False
    cudnn_algo: str | None = None  # EXHAUSTIVE, HEURISTIC or DEFAULT; None: ORT's default
    cudnn_max_workspace: bool | None = None
    trt_cache: Path | None = None  # engine and timing cache folder
    trt_fp16: bool = False
    baseline: str = "torch"  # or "none"
    strict_placement: bool = False  # GPU: compute nodes on the CPU refuse the run
    compare: str | None = None  # "openvino": time it on the same file, batch and threads


@dataclass
class BatchResult:
    """One flat record per batch size; numbers are None where the configuration failed."""

    batch_size: int
    provider: str
    runs: int = 0
    min_ms: float | None = None
    mean_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    cv: float | None = None  # standard deviation / mean of the timed runs
    images_per_s: float | None = None  # batch x runs / wall time of the timed loop
    session_create_ms: float | None = None
    first_inference_ms: float | None = None
    torch_runs: int = 0
    torch_mean_ms: float | None = None
    torch_p50_ms: float | None = None
    torch_p90_ms: float | None = None
    torch_p99_ms: float | None = None
    torch_cv: float | None = None
    torch_images_per_s: float | None = None
    torch_other_cores: float | None = None
    speedup_vs_torch: float | None = None  # ONNX Runtime images/s over eager images/s
    openvino_runs: int = 0
    openvino_mean_ms: float | None = None
    openvino_p50_ms: float | None = None
    openvino_p90_ms: float | None = None
    openvino_p99_ms: float | None = None
    openvino_cv: float | None = None
    openvino_images_per_s: float | None = None
    openvino_other_cores: float | None = None
    speedup_vs_openvino: float | None = None  # ONNX Runtime images/s over OpenVINO's
    # Other processes' CPU use (in cores) during each timed loop, and whether it stayed under
    # contention.BUSY_SHARE of the cores in all of them; if not, the ratios mean little.
    other_cores: float | None = None
    ratios_reliable: bool = True
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class RunTimes:
    """Every timed run of one engine at one batch size, for latency distributions (the CSV
    keeps to one row of statistics per batch size)."""

    batch_size: int
    engine: str  # "onnxruntime" or "torch"
    latencies_ms: list[float]


@dataclass
class BenchReport:
    model: Path
    model_sha256: str
    metadata: ModelMetadata
    provider: str
    threads: int
    spinning: bool
    io_binding: bool
    graph_optimization: str
    options: BenchOptions
    environment: Environment
    input_dtype: str = ""
    provider_options: dict[str, dict[str, str]] = field(default_factory=dict)  # as ORT reports
    placement: Placement | None = None  # where the first batch's session put each node
    eager_baseline: str = ""  # how PyTorch eager ran: device, dtype, cuDNN search, TF32
    batches: list[BatchResult] = field(default_factory=list)
    run_times: list[RunTimes] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. an int8 file made for other CPUs
    openvino: str = ""  # version and inference precision, where compared


def check_options(options: BenchOptions) -> str:
    """Every cheap check before any work; returns the provider's full name."""
    provider = resolve_provider(options.provider)
    sizes = options.batch_sizes
    if sizes is not None and (not sizes or min(sizes) < 1):
        raise InputError(f"batch sizes must be whole numbers of at least 1, got {sizes}")
    if options.warmup_runs is not None and options.warmup_s is not None:
        raise InputError("give either --warmup (runs) or --warmup-s (seconds), not both")
    if options.iterations is not None and options.duration_s is not None:
        raise InputError("give either --iterations or --duration, not both")
    if min(options.warmup_runs or 0, options.warmup_s or 0) < 0:
        raise InputError("the warm-up cannot be negative")
    if (options.iterations is not None and options.iterations < 1) or (
        options.duration_s is not None and options.duration_s <= 0
    ):
        raise InputError(
            "the timed loop needs at least one run (--iterations >= 1, --duration > 0)"
        )
    if options.threads is not None and options.threads < 1:
        raise InputError(f"threads must be at least 1, got {options.threads}")
    if options.baseline not in ("torch", "none"):
        raise InputError(f"unknown baseline {options.baseline!r}; use torch or none")
    if options.compare is not None:
        if options.compare not in ENGINES:
            raise InputError(f"--compare {options.compare}: use {', '.join(ENGINES)}")
        if provider != CPU:
            raise InputError("--compare openvino times OpenVINO's CPU plugin: use --provider cpu")
        import_openvino()
    cuda_only = options.cuda_graph or options.cudnn_algo or options.cudnn_max_workspace is not None
    if cuda_only and provider != CUDA:
        raise InputError("--cuda-graph and the cuDNN options need --provider cuda")
    if options.cuda_graph and not options.io_binding:
        raise InputError("--cuda-graph replays fixed device addresses: it needs --io-binding")
    if (options.trt_cache is not None or options.trt_fp16) and provider != TENSORRT:
        raise InputError("--trt-cache and --trt-fp16 need --provider tensorrt")
    return provider


def bench(
    model_path: Path,
    options: BenchOptions = BenchOptions(),
    progress: Callable[[str], None] = lambda step: None,
) -> BenchReport:
    """Bench every batch size; a failed one is recorded, a provider fallback refuses the run."""
    provider = check_options(options)
    model_path = Path(model_path)
    proto, metadata = load_with_metadata(model_path)
    batch_sizes = _batch_sizes(options.batch_sizes, metadata, model_path)
    largest = max(batch_sizes)
    eager_bytes = activation_bytes(metadata.arch, largest, metadata.image_size)
    check_fits(
        2 * input_bytes(largest, metadata.image_size) + 2 * eager_bytes,  # ORT, then eager
        f"bench at batch {largest}, {metadata.image_size}x{metadata.image_size}",
    )
    warnings = require_target(proto, metadata, provider, name=str(model_path))
    for warning in warnings:
        progress(f"warning: {warning}")
    environment = describe_environment()
    model_sha256 = sha256_of(model_path)
    base = session_config(provider, options)
    threads = base.intra_op_threads
    on_gpu = provider in (CUDA, TENSORRT)
    report = BenchReport(
        model=model_path,
        model_sha256=model_sha256,
        metadata=metadata,
        provider=provider,
        threads=threads,
        spinning=options.spin,
        io_binding=on_gpu and options.io_binding,
        graph_optimization=base.graph_optimization,
        options=options,
        environment=environment,
        warnings=warnings,
    )
    eager: list[torch.nn.Module] = []  # built on first use, after the provider proved it runs
    for batch in batch_sizes:
        result = BatchResult(batch_size=batch, provider=provider)
        # One session per batch size; under TensorRT, one engine built for exactly this batch.
        config = session_config(
            provider, options, metadata=metadata, model_sha256=model_sha256, batch_sizes=(batch,)
        )
        try:
            array = _bench_onnxruntime(model_path, config, report, result, options, progress)
            if options.compare == "openvino":
                _bench_openvino(model_path, array, report, result, options, threads, progress)
            if options.baseline == "torch":
                if not eager:
                    progress("building the eager PyTorch model for the baseline")
                    eager.append(rebuild_model(metadata).model)
                runner = eager_runner(eager[0], on_gpu, metadata, options, threads)
                report.eager_baseline = runner.describe()
                latencies = _bench_torch(runner, array, result, options, progress)
                if latencies:
                    report.run_times.append(RunTimes(batch, "torch", latencies))
        except ResnetDeployError:
            raise  # bad input or a provider that cannot run: the whole run is wrong
        except Exception as exc:  # one configuration failing (out of memory, ...) is a result
            engine = "torch eager: " if result.runs else ""
            first_line = str(exc).strip().partition("\n")[0]
            result.error = f"{engine}{type(exc).__name__}: {first_line}"
            progress(f"batch {batch}: failed: {result.error}")
        result.warnings += _warnings(result) + _contention_warnings(result)
        report.batches.append(result)
    return report


def _batch_sizes(
    requested: tuple[int, ...] | None, metadata: ModelMetadata, path: Path
) -> tuple[int, ...]:
    if metadata.batch == "dynamic":
        return requested or DEFAULT_BATCH_SIZES
    fixed = int(metadata.batch)
    if requested not in (None, (fixed,)):
        raise InputError(
            f"{path}: has a fixed batch of {fixed}; bench it with --batch-sizes {fixed} "
            "or export it again with --batch dynamic"
        )
    return (fixed,)


def session_config(
    provider: str,
    options: BenchOptions,
    *,
    metadata: ModelMetadata | None = None,
    model_sha256: str = "",
    batch_sizes: tuple[int, ...] = (),
) -> SessionConfig:
    """The session a bench with ``options`` runs: every graph optimization, the spinning and
    provider options asked for, and as many threads as physical cores unless told.

    Given the model's metadata and the batch sizes the session will see, a TensorRT session
    gets an explicit profile from the smallest to the largest (LoadGen: ``(1, max_batch)``)
    and its engine cache a folder per model and profile.
    """
    config = SessionConfig(
        provider=provider,
        provider_options=_provider_options(provider, options),
        intra_op_threads=options.threads or physical_cores(),
        graph_optimization="all",
        session_config_entries={SPINNING: "1" if options.spin else "0"},
        strict_placement=options.strict_placement,
    )
    if metadata is None or not batch_sizes:
        return config
    profile = trt_profile(metadata.input_name, batch_sizes, (metadata.image_size,))
    return with_trt_profile(config, profile, model_sha256)


def _provider_options(provider: str, options: BenchOptions) -> dict[str, str]:
    if provider == CUDA:
        return cuda_provider_options(
            cudnn_algo=options.cudnn_algo,
            cudnn_max_workspace=options.cudnn_max_workspace,
            cuda_graph=options.cuda_graph,
        )
    if provider == TENSORRT:
        if options.trt_cache is not None:
            if not options.trt_cache.parent.is_dir():
                raise InputError(f"--trt-cache {options.trt_cache}: its parent folder is missing")
            options.trt_cache.mkdir(exist_ok=True)
        return tensorrt_provider_options(cache_dir=options.trt_cache, fp16=options.trt_fp16)
    return {}


def _bench_onnxruntime(
    model_path: Path,
    config: SessionConfig,
    report: BenchReport,
    result: BatchResult,
    options: BenchOptions,
    progress: Callable[[str], None],
) -> np.ndarray:
    """Fill ``result`` with ONNX Runtime's numbers (and ``report`` with what the session says);
    return the batch it ran, so the baseline runs the very same one."""
    batch = result.batch_size
    progress(f"batch {batch}: creating the {config.provider} session")
    note = tensorrt_build_note(config)
    if note:
        progress(f"batch {batch}: {note}")
    start = time.perf_counter()
    session = create_session(model_path, config)
    result.session_create_ms = (time.perf_counter() - start) * 1e3
    if note:
        seconds = result.session_create_ms / 1e3
        progress(f"batch {batch}: session and TensorRT engine ready in {seconds:.1f} s")
    dtype = input_dtype(session)
    report.input_dtype = report.input_dtype or dtype.name
    report.provider_options = report.provider_options or provider_options_used(session)
    report.placement = report.placement or session.placement
    result.warnings += check_placement(session.placement, strict=False)
    size = report.metadata.image_size
    array = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(dtype)
    device = "cuda" if report.io_binding else None
    with OrtRunner(session, binding_device=device) as runner:
        del session  # the runner holds the only reference and drops it on exit
        progress(f"batch {batch}: warming up and timing ONNX Runtime")
        result.first_inference_ms, stats, latencies = measure(runner, array, options)
    report.run_times.append(RunTimes(batch, "onnxruntime", latencies))
    for key, value in stats.items():
        setattr(result, key, value)
    progress(f"batch {batch}: onnxruntime p50 {result.p50_ms:.2f} ms over {result.runs} runs")
    return array


def _bench_openvino(
    model_path: Path,
    array: np.ndarray,
    report: BenchReport,
    result: BatchResult,
    options: BenchOptions,
    threads: int,
    progress: Callable[[str], None],
) -> None:
    """OpenVINO on the very batch ONNX Runtime ran; a failure is a warning, not the run's."""
    progress(f"batch {result.batch_size}: warming up and timing OpenVINO")
    try:
        size = report.metadata.image_size
        with OpenVinoRunner(
            str(model_path), batch=len(array), image_size=size, threads=threads
        ) as runner:
            report.openvino = f"OpenVINO {runner.version}, inference precision {runner.precision}"
            _, stats, _ = measure(runner, array, options)
    except Exception as exc:
        first_line = str(exc).strip().partition("\n")[0]
        result.warnings.append(f"openvino failed: {type(exc).__name__}: {first_line}")
        return
    for key in TORCH_FIELDS:
        setattr(result, f"openvino_{key}", stats[key])
    result.speedup_vs_openvino = result.images_per_s / stats["images_per_s"]
    progress(
        f"batch {result.batch_size}: openvino p50 {stats['p50_ms']:.2f} ms; "
        f"onnxruntime {result.speedup_vs_openvino:.2f}x its throughput"
    )


def eager_runner(
    model: torch.nn.Module,
    on_gpu: bool,
    metadata: ModelMetadata,
    options: BenchOptions,
    threads: int,
) -> TorchRunner:
    """Eager PyTorch set up as fairly as ONNX Runtime is: on the GPU, in the file's float
    precision (fp16 for an fp16 file), with cuDNN's algorithm search when ONNX Runtime searches
    exhaustively, and TF32 as ONNX Runtime's CUDA provider (on by default). On the CPU eager
    runs fp32 whatever the file is, and says so."""
    if not on_gpu:
        return TorchRunner(model, threads=threads, dtype=torch.float32)
    exhaustive = (options.cudnn_algo or "EXHAUSTIVE").upper() == "EXHAUSTIVE"
    return TorchRunner(
        model,
        threads=threads,
        device="cuda",
        dtype=torch.float16 if metadata.precision == "fp16" else torch.float32,
        cudnn_benchmark=exhaustive,
        tf32=True,
    )


def _bench_torch(
    runner: TorchRunner,
    array: np.ndarray,
    result: BatchResult,
    options: BenchOptions,
    progress: Callable[[str], None],
) -> list[float]:
    """Fill ``result``'s eager numbers; return every timed run's ms (none when it cannot run)."""
    if runner.device.type == "cuda" and not torch.cuda.is_available():
        result.warnings.append("no torch baseline: this PyTorch build cannot use the GPU")
        return []
    with runner:
        _, stats, latencies = measure(runner, array, options)
    for key in TORCH_FIELDS:
        setattr(result, f"torch_{key}", stats[key])
    result.speedup_vs_torch = result.images_per_s / stats["images_per_s"]
    progress(
        f"batch {result.batch_size}: torch eager p50 {stats['p50_ms']:.2f} ms; "
        f"onnxruntime {result.speedup_vs_torch:.2f}x its throughput"
    )
    return latencies


def measure(
    runner: Any, array: np.ndarray, options: BenchOptions
) -> tuple[float, dict, list[float]]:
    """First inference in ms, then warm-up, then the timed loop's statistics and each run's ms."""
    feed = runner.place(array)
    start = time.perf_counter()
    runner.infer(feed)
    first_ms = (time.perf_counter() - start) * 1e3
    warmup = loop_bounds(options.warmup_runs, options.warmup_s, DEFAULT_WARMUP_S)
    time_runs(runner.infer, feed, **warmup)
    timed = loop_bounds(options.iterations, options.duration_s, DEFAULT_DURATION_S)
    with CpuMonitor() as monitor:
        times, wall = time_runs(runner.infer, feed, **timed)
    stats = summarize(times, wall, len(array))
    stats["other_cores"] = monitor.result.other_cores
    return first_ms, stats, [t * 1e3 for t in times]


def loop_bounds(
    runs: int | None, seconds: float | None, default_s: float, *, limit_s: float | None = None
) -> dict[str, Any]:
    """Exactly ``runs`` runs or ``seconds`` (``default_s`` when neither is given), and with
    ``limit_s`` never longer than that either way."""
    if runs is None and seconds is None:
        seconds = default_s
    if limit_s is not None:
        seconds = min(seconds or limit_s, limit_s)
    return {"runs": runs, "seconds": seconds}


def time_runs(
    infer: Callable[[Any], Any], feed: Any, *, runs: int | None = None, seconds: float | None = None
) -> tuple[list[float], float]:
    """Each run's seconds and the loop's wall time: ``runs`` runs, or runs for ``seconds``."""
    times: list[float] = []
    start = time.perf_counter()
    while (runs is not None and len(times) < runs) or (
        seconds is not None and time.perf_counter() - start < seconds
    ):
        begin = time.perf_counter()
        infer(feed)
        times.append(time.perf_counter() - begin)
    return times, time.perf_counter() - start


def time_parallel(
    runners: list[OrtRunner], array: np.ndarray, *, seconds: float, warmup_s: float = 0.0
) -> tuple[list[float], float, Contention]:
    """Each runner in its own thread, as a server runs its instances: one run and ``warmup_s``
    of warm-up apiece, then all of them at once for ``seconds``. Every timed run's seconds, the
    wall time, and other processes' CPU use meanwhile; the first error any thread hit raises."""
    start = threading.Barrier(len(runners) + 1)
    times: list[list[float]] = [[] for _ in runners]
    errors: list[BaseException] = []

    def serve(index: int) -> None:
        runner = runners[index]
        try:
            feed = runner.place(array)
            until = time.perf_counter() + warmup_s
            runner.infer(feed)
            while time.perf_counter() < until:
                runner.infer(feed)
        except BaseException as exc:  # raised once every thread has stopped
            errors.append(exc)
        start.wait()
        end = time.perf_counter() + seconds
        try:
            while not errors and time.perf_counter() < end:
                begin = time.perf_counter()
                runner.infer(feed)
                times[index].append(time.perf_counter() - begin)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=serve, args=(i,), daemon=True) for i in range(len(runners))]
    for worker in workers:
        worker.start()
    start.wait()
    with CpuMonitor() as monitor:
        began = time.perf_counter()
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - began
    if errors:
        raise errors[0]
    return [t for per in times for t in per], wall, monitor.result


def summarize(times_s: list[float], wall_s: float, batch: int) -> dict[str, float]:
    """Latency percentiles in ms and throughput in images/s, raw floats."""
    ms = np.asarray(times_s) * 1e3
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    mean = float(ms.mean())
    return {
        "runs": len(ms),
        "min_ms": float(ms.min()),
        "mean_ms": mean,
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "max_ms": float(ms.max()),
        "cv": float(ms.std(ddof=1) / mean) if len(ms) > 1 else 0.0,
        "images_per_s": batch * len(ms) / wall_s,
    }


def _warnings(result: BatchResult) -> list[str]:
    notes = []
    for name, cv in (("onnxruntime", result.cv), ("torch eager", result.torch_cv)):
        if cv is not None and cv > CV_WARNING:
            notes.append(
                f"{name} unstable: coefficient of variation {cv:.2f} > {CV_WARNING} "
                "(other load on the machine? run longer)"
            )
    return notes + too_few_runs(result)


def too_few_runs(result: BatchResult, unit: str = "timed runs") -> list[str]:
    """A warning for each percentile too few runs cannot tell from the maximum."""
    short = [p for p, n in PERCENTILE_MIN_RUNS.items() if result.error is None and result.runs < n]
    if not short:
        return []
    needed = ", ".join(f"{p} needs {PERCENTILE_MIN_RUNS[p]}" for p in short)
    return [f"only {result.runs} {unit}: {needed} to be more than the maximum"]


def _contention_warnings(result: BatchResult) -> list[str]:
    """Flag the batch when other processes took more than a small share of the cores while
    any of its engines was timed: then no ratio between them means anything."""
    cores = os.cpu_count() or 1
    phases = {
        "onnxruntime": result.other_cores,
        "torch eager": result.torch_other_cores,
        "openvino": result.openvino_other_cores,
    }
    busy = {name: load for name, load in phases.items() if load is not None}
    if not busy or max(busy.values()) <= BUSY_SHARE * cores:
        return []
    result.ratios_reliable = False
    loads = ", ".join(f"{name} {load:.2f}" for name, load in busy.items())
    return [
        f"UNRELIABLE: other processes used up to {max(busy.values()):.2f} of {cores} cores while "
        f"timing ({loads}; limit {BUSY_SHARE:.0%} of the cores): times and speed-ups are not "
        "this machine's; rerun on a quiet machine"
    ]


def write_plot(report: BenchReport, path: Path, *, replace: bool = False) -> None:
    """Latency percentiles and throughput against batch size, one PNG, written atomically."""
    from matplotlib.figure import Figure  # heavy; only when a plot is asked for

    done = [b for b in report.batches if b.error is None]
    if not done:
        raise InputError("nothing to plot: every batch size failed")
    sizes = [b.batch_size for b in done]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    latency, throughput = fig.subplots(1, 2)
    for name in ("p50_ms", "p90_ms", "p99_ms"):
        latency.plot(sizes, [getattr(b, name) for b in done], marker="o", label=f"ORT {name[:3]}")
    throughput.plot(sizes, [b.images_per_s for b in done], marker="o", label=report.provider)
    if all(b.openvino_runs for b in done):
        latency.plot(sizes, [b.openvino_p50_ms for b in done], "g:", marker="^", label="OV p50")
        throughput.plot(
            sizes, [b.openvino_images_per_s for b in done], "g:", marker="^", label="OpenVINO"
        )
    if all(b.torch_runs for b in done):
        latency.plot(sizes, [b.torch_p50_ms for b in done], "k--", marker="s", label="eager p50")
        throughput.plot(
            sizes, [b.torch_images_per_s for b in done], "k--", marker="s", label="PyTorch eager"
        )
    for axes, label in ((latency, "latency (ms)"), (throughput, "throughput (images/s)")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(sizes, [str(s) for s in sizes])
        axes.set_xlabel("batch size")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        axes.legend()
    fig.suptitle(
        f"{report.model.name} ({report.metadata.arch}, {report.input_dtype}) on "
        f"{report.provider}, {report.threads} threads, {report.environment.cpu_model}",
        fontsize=10,
    )
    if any(not b.ratios_reliable for b in done):
        fig.text(
            0.5,
            0.5,
            "UNRELIABLE: other processes were busy while timing",
            color="red",
            alpha=0.5,
            fontsize=16,
            ha="center",
            va="center",
            rotation=20,
        )
    with atomic_output(path, replace=replace) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def summary(report: BenchReport) -> str:
    """The terminal report: what ran where, one row per batch size, then warnings and errors."""
    env, meta = report.environment, report.metadata
    lines = [
        f"{report.model}: {meta.arch} ({meta.variant}), {meta.precision}, "
        f"input {report.input_dtype}, "
        f"sha256 {report.model_sha256[:12]}",
        f"{report.provider}, {report.threads} threads, spinning {_on(report.spinning)}, "
        f"IO binding {_on(report.io_binding)}, graph optimization {report.graph_optimization}",
        f"{env.cpu_model}, {env.physical_cores} physical cores"
        + "".join(f"; {gpu}" for gpu in env.gpus),
    ]
    used = {name: opts for name, opts in report.provider_options.items() if opts}
    if used:
        lines.append(f"provider options: {used}")
    if report.placement is not None:
        lines.append(report.placement.summary())
    if report.eager_baseline:
        lines.append(f"baseline: {report.eager_baseline}")
    if report.openvino:
        lines.append(f"compared with {report.openvino}, same file, batch and threads")
    headers = list(LATENCY_HEADERS)
    eager = report.options.baseline == "torch"
    if eager:
        headers += ["eager p50 ms", "eager images/s", "speed-up"]
    openvino = report.options.compare == "openvino"
    if openvino:
        headers += ["openvino p50 ms", "openvino images/s", "ort/openvino"]

    def beside(b: BatchResult) -> list[Any]:
        row = []
        if eager:
            row += [b.torch_p50_ms, b.torch_images_per_s, _ratio(b.speedup_vs_torch, b)]
        if openvino:
            row += [b.openvino_p50_ms, b.openvino_images_per_s, _ratio(b.speedup_vs_openvino, b)]
        return row

    rows, notes = latency_rows(report.batches, beside)
    if rows:
        lines += ["", format_table(headers, rows)]
    if any(not b.ratios_reliable for b in report.batches):
        notes.append("* ratios measured while other processes were busy: UNRELIABLE")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def latency_rows(
    batches: list[BatchResult], beside: Callable[[BatchResult], list[Any]]
) -> tuple[list[list[Any]], list[str]]:
    """A table row per measured batch (the latency columns, then ``beside``'s) and a note per
    warning and failure: the table `bench` and `bench --url` both print."""
    rows, notes = [], []
    for b in batches:
        notes += [f"batch {b.batch_size}: {text}" for text in b.warnings]
        if b.error is not None:
            notes.append(f"batch {b.batch_size}: failed: {b.error}")
            continue
        row = [b.batch_size, b.runs, b.mean_ms, b.p50_ms, b.p90_ms, b.p99_ms, b.max_ms, b.cv]
        row += [b.images_per_s, *beside(b)]
        rows.append(["-" if value is None else value for value in row])
    return rows, notes


def _ratio(value: float | None, result: BatchResult) -> str | None:
    """A speed-up for the table, starred where the machine was busy while it was measured."""
    if value is None:
        return None
    return f"{value:.2f}x" + ("" if result.ratios_reliable else "*")


def _on(flag: bool) -> str:
    return "on" if flag else "off"
