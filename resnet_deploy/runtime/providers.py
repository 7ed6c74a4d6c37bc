"""The one place that creates ONNX Runtime sessions, and refuses silent CPU fallback.

ONNX Runtime lists CUDA among ``get_available_providers()`` whenever the GPU package is
installed, even on a machine with no GPU or no CUDA libraries. Asked for CUDA there, it logs
the reason to stderr and quietly runs on the CPU instead. A benchmark or a verification that
then reports "CUDA" is a lie, so every session is checked after creation and the logged cause
is turned into the error message.

Once a session has started on the provider asked for, ONNX Runtime's run-time fallback is
switched off too: in 1.31 ``run`` catches an execution-provider failure (``EPFail``, which is how
TensorRT reports an engine it cannot build for a new shape), prints to stdout, rebuilds the
session on the CPU and reruns. Here that failure is a one-line ProviderError instead.
"""

from __future__ import annotations

import io
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from resnet_deploy.errors import InputError, ProviderError
from resnet_deploy.model.metadata import read_metadata
from resnet_deploy.model.onnxfile import ModelFile, load_onnx
from resnet_deploy.runtime.int8target import file_target, tensorrt_int8_options
from resnet_deploy.runtime.names import CPU, CUDA, CUDNN_ALGOS, SHORT_NAMES, TENSORRT
from resnet_deploy.runtime.placement import (
    RECORD_PLACEMENT,
    Placement,
    check_placement,
    node_placement,
)

ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


def input_dtype(session: ort.InferenceSession) -> np.dtype:
    """The dtype the model declares for its first input (fp16 models take float16)."""
    declared = session.get_inputs()[0].type
    if declared not in ONNX_DTYPES:
        raise InputError(f"input type {declared} is not supported; expected a float tensor")
    return np.dtype(ONNX_DTYPES[declared])


def resolve_provider(name: str) -> str:
    """Map ``cpu``, ``cuda``, ``tensorrt`` or any case-insensitive prefix of a full name."""
    key = name.strip().lower()
    if key in SHORT_NAMES:
        return SHORT_NAMES[key]
    known = ort.get_all_providers()
    matches = [full for full in known if full.lower().startswith(key)] if key else []
    if len(matches) == 1:
        return matches[0]
    choices = ", ".join(sorted(SHORT_NAMES)) + ", or a full name such as " + CPU
    if len(matches) > 1:
        raise InputError(f"provider {name!r} is ambiguous ({', '.join(matches)}); use {choices}")
    raise InputError(f"unknown provider {name!r}; use {choices}")


@dataclass
class SessionConfig:
    """How to build a session; recorded as it was actually applied in results."""

    provider: str = "cpu"
    provider_options: dict[str, Any] = field(default_factory=dict)
    intra_op_threads: int = 0  # 0: ONNX Runtime's default
    graph_optimization: str = "all"  # disable, basic, extended, all
    session_config_entries: dict[str, str] = field(default_factory=dict)  # e.g. SPINNING
    strict_placement: bool = False  # a GPU session with compute nodes on the CPU is an error
    profile_prefix: str | None = None  # ONNX Runtime's profiler on, its JSON file named so
    optimized_model_path: Path | None = None  # save the graph ONNX Runtime optimized and runs


# What ONNX Runtime raises for a model it cannot load; its own classes derive from Exception.
LOAD_ERRORS = (
    RuntimeError,
    ort_state.Fail,
    ort_state.InvalidArgument,
    ort_state.InvalidGraph,
    ort_state.InvalidProtobuf,
    ort_state.NoSuchFile,
    ort_state.NotImplemented,
    ort_state.RuntimeException,
)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class StrictSession(ort.InferenceSession):
    """An ONNX Runtime session whose provider failures at run time are ProviderErrors.

    Its fallback is disabled by ``create_session``, so ONNX Runtime re-raises ``EPFail``
    instead of rerunning on the CPU; ``placement`` is where its nodes were assigned.
    """

    placement: Placement

    def run(self, *args: Any, **kwargs: Any) -> Any:
        with provider_failures(self):
            return super().run(*args, **kwargs)

    def run_with_ort_values(self, *args: Any, **kwargs: Any) -> Any:
        with provider_failures(self):
            return super().run_with_ort_values(*args, **kwargs)

    def run_with_iobinding(self, *args: Any, **kwargs: Any) -> Any:
        with provider_failures(self):
            return super().run_with_iobinding(*args, **kwargs)


@contextmanager
def provider_failures(session: ort.InferenceSession) -> Iterator[None]:
    """ONNX Runtime's ``EPFail`` (and a refused CUDA-graph capture) as one-line ProviderErrors."""
    try:
        yield
    except ort_state.EPFail as exc:
        raise ProviderError(
            f"{session.get_providers()[0]} failed while running (no CPU fallback): "
            f"{_reason(str(exc))}"
        ) from None
    except LOAD_ERRORS as exc:
        if GRAPH_CAPTURE_REFUSED not in str(exc):
            raise
        raise ProviderError(f"CUDA graph capture refused: {_reason(str(exc))}") from None


# How ONNX Runtime words a session that cannot capture a CUDA graph (nodes off the GPU, ...).
GRAPH_CAPTURE_REFUSED = "cannot use the graph capture feature"


def create_session(model: ModelFile | Path | bytes, config: SessionConfig) -> StrictSession:
    """A session that runs on exactly the provider asked for, or a ProviderError saying why not.

    TensorRT is registered together with CUDA (TensorRT's documented setup), so the nodes it
    does not take run on CUDA, not on the CPU; an fp16 file turns on TensorRT's fp16 kernels.
    A ModelFile the command already read is not parsed again; a path is read (and its external
    data checked) here.
    """
    provider = resolve_provider(config.provider)
    if provider not in ort.get_available_providers():
        raise ProviderError(
            f"{provider} is not part of this onnxruntime build "
            f"(it has {', '.join(ort.get_available_providers())})"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = _OPT_LEVELS[config.graph_optimization]
    options.intra_op_num_threads = config.intra_op_threads
    for key, value in (config.session_config_entries | {RECORD_PLACEMENT: "1"}).items():
        options.add_session_config_entry(key, value)
    if config.profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = config.profile_prefix
    if config.optimized_model_path is not None:
        options.optimized_model_filepath = str(config.optimized_model_path)
    if isinstance(model, Path):
        proto = load_onnx(model)  # checks external data too
        # not hashed: no record made here names the file's bytes
        model = ModelFile(model, proto, read_metadata(proto, model), sha256="")
    providers = registered_providers(
        provider, config.provider_options, model if isinstance(model, ModelFile) else None
    )
    source = str(model.path) if isinstance(model, ModelFile) else model  # ORT maps the file
    # Python-level fallbacks (TensorRT's "EP Error") are printed to stdout; keep them out of it.
    with captured_stderr() as log, redirect_stdout(io.StringIO()) as printed:
        try:
            session = StrictSession(source, sess_options=options, providers=providers)
        except ort_state.EPFail as exc:
            raise ProviderError(f"{provider} failed to start: {_reason(str(exc))}") from None
        except LOAD_ERRORS as exc:
            if GRAPH_CAPTURE_REFUSED in str(exc):
                raise ProviderError(f"CUDA graph capture refused: {_reason(str(exc))}") from None
            raise InputError(load_failure(model, str(exc))) from None
    text = printed.getvalue() + log.text
    wanted = [name for name, _ in providers]
    if session.get_providers()[: len(wanted)] != wanted:
        started = session.get_providers()[0]
        missing = next((p for p in wanted if p not in session.get_providers()), provider)
        raise ProviderError(
            f"ONNX Runtime could not start {missing} and fell back to "
            f"{started if started != provider else CPU}: {fallback_cause(text)}"
        )
    session.disable_fallback()  # from here on, a provider failure raises instead of rerunning
    session.placement = node_placement(session)
    check_placement(session.placement, strict=config.strict_placement)
    if text:
        sys.stderr.write(text)
    return session


def registered_providers(
    provider: str, options: dict[str, Any], model: ModelFile | onnx.ModelProto | None
) -> list[tuple[str, dict[str, Any]]]:
    """``[(provider, options)]``; TensorRT with CUDA after it, fp16 on for fp16 files and int8
    on for int8 files made for TensorRT (every command, LoadGen and serve included).

    A ModelFile brings the metadata its command already parsed; a bare proto is parsed here.
    """
    if provider != TENSORRT:
        return [(provider, options)]
    if isinstance(model, ModelFile):
        proto, metadata = model.proto, model.metadata
    else:
        proto, metadata = model, read_metadata(model) if model is not None else None
    if metadata is not None and metadata.precision == "fp16":
        options = {"trt_fp16_enable": "True"} | options  # an explicit choice wins
    if proto is not None:
        options = tensorrt_int8_options(file_target(proto, metadata)) | options
    cuda = {"device_id": str(options.get("device_id", 0))}
    return [(TENSORRT, options), (CUDA, cuda)]


def _reason(message: str) -> str:
    """ONNX Runtime's message on one line, without its ``[ONNXRuntimeError] : 11 : EP_FAIL :``."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else "no reason given"
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", last)


def load_failure(model: ModelFile | bytes, message: str) -> str:
    """ONNX Runtime's refusal of a model, with both versions named where it is a version."""
    name = str(model.path) if isinstance(model, ModelFile) else "model"
    ir = re.search(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)", message)
    if ir:
        return (
            f"{name}: IR version {ir[1]} is newer than onnxruntime {ort.__version__} reads "
            f"(up to IR version {ir[2]})"
        )
    opset = re.search(r"Opset (\d+) is under development.*? till opset (\d+)", message, re.S)
    if opset:
        return (
            f"{name}: opset {opset[1]} is newer than onnxruntime {ort.__version__} supports "
            f"(up to opset {opset[2]})"
        )
    detail = message.strip().splitlines()[-1] if message.strip() else "no reason given"
    return f"{name}: ONNX Runtime cannot load it: {detail}"


def fallback_cause(log: str) -> str:
    """The most telling line ONNX Runtime logged while failing to start a provider."""
    patterns = (
        r"EP Error \S+ [^\n]*?\) ([^\n]+)",  # the Python binding's message for TensorRT
        r"Failed to load library \S+ with error: ([^\n\x1b]+)",
        r"(no CUDA-capable device is detected)",
        r"(CUDA driver version is insufficient[^\n\x1b]*)",
        r"\[E:onnxruntime:[^\]]*\] ([^\n\x1b]+)",
        r"\[W:onnxruntime:[^\]]*\] ([^\n\x1b]+)",
    )
    for pattern in patterns:
        found = re.search(pattern, log)
        if found:
            return found.group(1).strip()
    return "it logged no reason (is a GPU present and its driver loaded?)"


class _Captured:
    text = ""


@contextmanager
def captured_stderr() -> Iterator[_Captured]:
    """Capture what native code writes to file descriptor 2 (ONNX Runtime's C++ logger)."""
    captured = _Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace")


def cuda_provider_options(
    *,
    cudnn_algo: str | None = None,
    cudnn_max_workspace: bool | None = None,
    cuda_graph: bool = False,
    device_id: int = 0,
    tf32: bool | None = None,
) -> dict[str, str]:
    """CUDA provider options; None leaves ONNX Runtime's default (EXHAUSTIVE search, max workspace).

    cuDNN's exhaustive search times every algorithm for each new input shape, on the first run
    with that shape: the reason each batch size needs its own warm-up.
    """
    options = {"device_id": str(device_id)}
    if cudnn_algo is not None:
        if cudnn_algo.upper() not in CUDNN_ALGOS:
            raise InputError(f"unknown cuDNN algorithm search {cudnn_algo!r}; use {CUDNN_ALGOS}")
        options["cudnn_conv_algo_search"] = cudnn_algo.upper()
    if cudnn_max_workspace is not None:
        options["cudnn_conv_use_max_workspace"] = "1" if cudnn_max_workspace else "0"
    if cuda_graph:
        options["enable_cuda_graph"] = "1"  # needs fixed shapes and IO binding
    if tf32 is not None:  # ONNX Runtime defaults to TF32 on: fp32 convs with 10 mantissa bits
        options["use_tf32"] = "1" if tf32 else "0"
    return options


def tensorrt_provider_options(
    *, cache_dir: Path | None = None, fp16: bool = False, device_id: int = 0
) -> dict[str, str]:
    """TensorRT provider options; a cache folder saves the minutes an engine build takes.

    Key the folder by the model (``with_trt_profile`` does): TensorRT's own cache id hashes the
    graph, not the weights, so a retrained model would load the old model's engine.
    """
    options = {"device_id": str(device_id)}
    if cache_dir is not None:
        options |= {
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache_dir),
        }
    if fp16:
        options["trt_fp16_enable"] = "True"
    return options


@dataclass(frozen=True)
class TrtProfile:
    """The input shapes one TensorRT engine is built for (NCHW, square images).

    Without an explicit profile TensorRT widens its range and rebuilds the engine at each new
    batch size, minutes each, inside whatever is being timed.
    """

    input_name: str
    min_shape: tuple[int, int, int, int]
    opt_shape: tuple[int, int, int, int]
    max_shape: tuple[int, int, int, int]

    @property
    def label(self) -> str:
        """A folder name: ``batch8_224``, ``batch1-32_224``, ``batch1-7_160-224``."""
        (b0, _, s0, _), (b1, _, s1, _) = self.min_shape, self.max_shape
        batch = f"batch{b0}" if b0 == b1 else f"batch{b0}-{b1}"
        return f"{batch}_{s0}" if s0 == s1 else f"{batch}_{s0}-{s1}"

    def options(self) -> dict[str, str]:
        def shape(dims: tuple[int, ...]) -> str:
            return f"{self.input_name}:{'x'.join(map(str, dims))}"

        return {
            "trt_profile_min_shapes": shape(self.min_shape),
            "trt_profile_opt_shapes": shape(self.opt_shape),
            "trt_profile_max_shapes": shape(self.max_shape),
        }


def trt_profile(
    input_name: str, batch_sizes: Sequence[int], image_sizes: Sequence[int]
) -> TrtProfile:
    """The smallest batch and image size up to the largest; tuned (opt) for the largest."""
    if not batch_sizes or not image_sizes or min(*batch_sizes, *image_sizes) < 1:
        raise InputError(f"a TensorRT profile needs sizes >= 1, got {batch_sizes}, {image_sizes}")
    low, high = min(image_sizes), max(image_sizes)
    largest = (max(batch_sizes), 3, high, high)
    return TrtProfile(input_name, (min(batch_sizes), 3, low, low), largest, largest)


def with_trt_profile(
    config: SessionConfig, profile: TrtProfile, model_sha256: str
) -> SessionConfig:
    """``config`` with an explicit TensorRT profile, and its engine cache (if any) moved to
    ``<cache>/<model sha256[:16]>/<profile label>``; other providers are returned unchanged.
    The timing cache (kernel timings, valid across models and shapes) stays shared."""
    if resolve_provider(config.provider) != TENSORRT:
        return config
    options = dict(config.provider_options) | profile.options()
    if "trt_engine_cache_path" in options:
        folder = Path(options["trt_engine_cache_path"]) / model_sha256[:16] / profile.label
        folder.mkdir(parents=True, exist_ok=True)
        options["trt_engine_cache_path"] = str(folder)
    return replace(config, provider_options=options)


# What ONNX Runtime's TensorRT provider logs for each engine it builds, read from its library's
# strings (the provider logs it at INFO level, we expect; not yet seen on a GPU).
ENGINE_BUILD_LOG = "TensorRT engine build for"


def count_engine_builds(log_text: str) -> int:
    """TensorRT engine builds in an ONNX Runtime log written at INFO level or more verbose."""
    return log_text.count(ENGINE_BUILD_LOG)


def tensorrt_build_note(config: SessionConfig) -> str | None:
    """A progress line for a TensorRT session, whose engine build can take minutes."""
    if resolve_provider(config.provider) != TENSORRT:
        return None
    options = config.provider_options
    shapes = options.get("trt_profile_max_shapes", "the shapes of the first runs")
    cache = options.get("trt_engine_cache_path")
    where = f"cached in {cache}" if cache else "not cached: a TensorRT cache folder keeps it"
    return f"building the TensorRT engine up to {shapes} (minutes if not cached; {where})"


def provider_options_used(session: ort.InferenceSession) -> dict[str, dict[str, str]]:
    """The options each provider of ``session`` really runs with, defaults included."""
    return dict(session.get_provider_options())
