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
