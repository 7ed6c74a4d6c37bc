"""Bench: latency and throughput of an exported model on ONNX Runtime, beside PyTorch eager.

Every engine is timed by ``timing``'s loop, as trtexec and onnxruntime_perf_test time. Each
batch size gets a fresh session and its own warm-up: cuDNN's exhaustive search and ONNX
Runtime's memory arena both tune themselves to the first shapes they see. The eager baseline
runs after the ONNX Runtime session is closed, so spinning ONNX Runtime threads never steal
the cores it needs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resnet_deploy.environment import Environment, describe_environment
from resnet_deploy.errors import InputError, ResnetDeployError
from resnet_deploy.model.eager import TorchRunner
from resnet_deploy.model.metadata import ModelMetadata
from resnet_deploy.model.onnxfile import ModelFile, read_model
from resnet_deploy.model.resnet import rebuild_model
from resnet_deploy.perf.bench_options import (
    DEFAULT_BATCH_SIZES,
    BenchOptions,
    check_options,
    session_config,
)
from resnet_deploy.perf.contention import BUSY_SHARE
from resnet_deploy.perf.timing import (
    CV_WARNING,
    DEFAULT_DURATION_S,
    DEFAULT_WARMUP_S,
    loop_bounds,
    measure,
    too_few_runs,
)
from resnet_deploy.runtime.int8target import require_target
from resnet_deploy.runtime.memory import activation_bytes, check_fits, input_bytes
from resnet_deploy.runtime.names import CUDA, TENSORRT
from resnet_deploy.runtime.openvino import OpenVinoRunner
from resnet_deploy.runtime.placement import Placement, check_placement
from resnet_deploy.runtime.providers import (
    SessionConfig,
    create_session,
    input_dtype,
    provider_options_used,
    tensorrt_build_note,
)
from resnet_deploy.runtime.runners import OrtRunner
from resnet_deploy.steps import Progress, no_progress

# What the baselines (eager, OpenVINO) keep of their timing, each under its prefix
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


def bench(
    model: Path | ModelFile,
    options: BenchOptions | None = None,
    progress: Progress = no_progress,
) -> BenchReport:
    """Bench every batch size; a failed one is recorded, a provider fallback refuses the run.

    ``model``: a path, or the file a caller has already read (read once per command)."""
    options = options or BenchOptions()
    provider = check_options(options)
    if not isinstance(model, ModelFile):
        model = read_model(model, require_metadata=True)
    model_path, metadata = model.path, model.required_metadata()
    batch_sizes = _batch_sizes(options.batch_sizes, metadata, model_path)
    largest = max(batch_sizes)
    eager_bytes = activation_bytes(metadata.arch, largest, metadata.image_size)
    check_fits(
        2 * input_bytes(largest, metadata.image_size) + 2 * eager_bytes,  # ORT, then eager
        f"bench at batch {largest}, {metadata.image_size}x{metadata.image_size}",
        options=["batch_sizes"],
    )
    warnings = require_target(model.proto, metadata, provider, name=str(model_path))
    for warning in warnings:
        progress(f"warning: {warning}")
    model_sha256 = model.sha256
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
        environment=describe_environment(),
        warnings=warnings,
    )
    eager: list[torch.nn.Module] = []  # built on first use, after the provider proved it runs
    progress("batch sizes", 0, len(batch_sizes))
    for done, batch in enumerate(batch_sizes, 1):
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
        progress("batch sizes", done, len(batch_sizes))
    return report


def _batch_sizes(
    requested: tuple[int, ...] | None, metadata: ModelMetadata, path: Path
) -> tuple[int, ...]:
    if metadata.batch == "dynamic":
        return requested or DEFAULT_BATCH_SIZES
    fixed = int(metadata.batch)
    if requested not in (None, (fixed,)):
        raise InputError(
            f"{path}: has a fixed batch of {fixed}; bench batch size {fixed} alone, "
            "or export it again with a dynamic batch",
            options=["batch_sizes"],
        )
    return (fixed,)


def _loops(options: BenchOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """The warm-up and timed loops ``options`` ask for, as ``timing.measure`` takes them."""
    warmup = loop_bounds(options.warmup_runs, options.warmup_s, DEFAULT_WARMUP_S)
    return warmup, loop_bounds(options.iterations, options.duration_s, DEFAULT_DURATION_S)


def _bench_onnxruntime(
    model_path: Path,
    config: SessionConfig,
    report: BenchReport,
    result: BatchResult,
    options: BenchOptions,
    progress: Progress,
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
        result.first_inference_ms, stats, latencies = measure(runner, array, *_loops(options))
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
    progress: Progress,
) -> None:
    """OpenVINO on the very batch ONNX Runtime ran; a failure is a warning, not the run's."""
    progress(f"batch {result.batch_size}: warming up and timing OpenVINO")
    try:
        size = report.metadata.image_size
        with OpenVinoRunner(
            str(model_path), batch=len(array), image_size=size, threads=threads
        ) as runner:
            report.openvino = f"OpenVINO {runner.version}, inference precision {runner.precision}"
            _, stats, _ = measure(runner, array, *_loops(options))
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
    progress: Progress,
) -> list[float]:
    """Fill ``result``'s eager numbers; return every timed run's ms (none when it cannot run)."""
    if runner.device.type == "cuda" and not torch.cuda.is_available():
        result.warnings.append("no torch baseline: this PyTorch build cannot use the GPU")
        return []
    with runner:
        _, stats, latencies = measure(runner, array, *_loops(options))
    for key in TORCH_FIELDS:
        setattr(result, f"torch_{key}", stats[key])
    result.speedup_vs_torch = result.images_per_s / stats["images_per_s"]
    progress(
        f"batch {result.batch_size}: torch eager p50 {stats['p50_ms']:.2f} ms; "
        f"onnxruntime {result.speedup_vs_torch:.2f}x its throughput"
    )
    return latencies


def _warnings(result: BatchResult) -> list[str]:
    notes = []
    for name, cv in (("onnxruntime", result.cv), ("torch eager", result.torch_cv)):
        if cv is not None and cv > CV_WARNING:
            notes.append(
                f"{name} unstable: coefficient of variation {cv:.2f} > {CV_WARNING} "
                "(other load on the machine? run longer)"
            )
    return notes + ([] if result.error else too_few_runs(result.runs))


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
