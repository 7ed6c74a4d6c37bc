"""What a bench is asked to run, checked before any work, and the ONNX Runtime session it
runs: shared by ``bench``, ``bench --url``, LoadGen's in-process system under test and tune,
without the eager baseline (and torch) that ``bench`` itself brings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from resnet_deploy.environment import physical_cores
from resnet_deploy.errors import InputError
from resnet_deploy.model.metadata import ModelMetadata
from resnet_deploy.runtime.names import CPU, CUDA, SPINNING, TENSORRT
from resnet_deploy.runtime.openvino import ENGINES, import_openvino
from resnet_deploy.runtime.providers import (
    SessionConfig,
    cuda_provider_options,
    resolve_provider,
    tensorrt_provider_options,
    trt_profile,
    with_trt_profile,
)

DEFAULT_BATCH_SIZES = (1, 8, 32)


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


def check_options(options: BenchOptions) -> str:
    """Every cheap check before any work; returns the provider's full name."""
    provider = resolve_provider(options.provider)
    sizes = options.batch_sizes
    if sizes is not None and (not sizes or min(sizes) < 1):
        raise InputError(
            f"batch sizes must be whole numbers of at least 1, got {sizes}", options=["batch_sizes"]
        )
    if options.warmup_runs is not None and options.warmup_s is not None:
        raise InputError(
            "give the warm-up either as runs or as seconds, not both",
            options=["warmup_runs", "warmup_s"],
        )
    if options.iterations is not None and options.duration_s is not None:
        raise InputError(
            "give the timed loop either as runs or as seconds, not both",
            options=["iterations", "duration_s"],
        )
    if min(options.warmup_runs or 0, options.warmup_s or 0) < 0:
        raise InputError(
            "the warm-up cannot be negative", options=fields_set(options, "warmup_runs", "warmup_s")
        )
    if (options.iterations is not None and options.iterations < 1) or (
        options.duration_s is not None and options.duration_s <= 0
    ):
        raise InputError(
            "the timed loop needs at least one run, or more than 0 s",
            options=fields_set(options, "iterations", "duration_s"),
        )
    if options.threads is not None and options.threads < 1:
        raise InputError(f"threads must be at least 1, got {options.threads}", options=["threads"])
    if options.baseline not in ("torch", "none"):
        raise InputError(
            f"unknown baseline {options.baseline!r}; use torch or none", options=["baseline"]
        )
    if options.compare is not None:
        if options.compare not in ENGINES:
            raise InputError(
                f"unknown engine to compare with {options.compare!r}; use {', '.join(ENGINES)}",
                options=["compare"],
            )
        if provider != CPU:
            raise InputError(
                "the OpenVINO comparison times OpenVINO's CPU plugin: use the cpu provider",
                options=["compare", "provider"],
            )
        import_openvino()
    cuda_only = fields_set(options, "cuda_graph", "cudnn_algo")
    if options.cudnn_max_workspace is not None:  # False is a choice too
        cuda_only.append("cudnn_max_workspace")
    if cuda_only and provider != CUDA:
        raise InputError(
            "CUDA graphs and the cuDNN options need the cuda provider",
            options=[*cuda_only, "provider"],
        )
    if options.cuda_graph and not options.io_binding:
        raise InputError(
            "a CUDA graph replays fixed device addresses: it needs I/O binding",
            options=["cuda_graph", "io_binding"],
        )
    tensorrt_only = fields_set(options, "trt_cache", "trt_fp16")
    if tensorrt_only and provider != TENSORRT:
        raise InputError(
            "the TensorRT engine cache and fp16 kernels need the tensorrt provider",
            options=[*tensorrt_only, "provider"],
        )
    return provider


def fields_set(options: object, *fields: str) -> list[str]:
    """Which of ``fields`` the caller set (not None, not False; 0 is set): the ones an error
    names."""
    values = {name: getattr(options, name) for name in fields}
    return [name for name, value in values.items() if value is not None and value is not False]


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
                raise InputError(
                    f"{options.trt_cache}: the engine cache's parent folder is missing",
                    options=["trt_cache"],
                )
            options.trt_cache.mkdir(exist_ok=True)
        return tensorrt_provider_options(cache_dir=options.trt_cache, fp16=options.trt_fp16)
    return {}
