"""The one place that creates ONNX Runtime sessions, and refuses silent CPU fallback.

ONNX Runtime lists CUDA among ``get_available_providers()`` whenever the GPU package is
installed, even on a machine with no GPU or no CUDA libraries. Asked for CUDA there, it logs
the reason to stderr and quietly runs on the CPU instead. A benchmark or a verification that
then reports "CUDA" is a lie, so every session is checked after creation and the logged cause
is turned into the error message.
"""

from __future__ import annotations

import io
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from resnet_deploy.errors import InputError, ProviderError
from resnet_deploy.onnxfile import load_onnx

SHORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
CPU = "CPUExecutionProvider"
CUDNN_ALGOS = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")  # cudnn_conv_algo_search values
SPINNING = "session.intra_op.allow_spinning"  # "1": idle threads spin (low latency, busy CPU)


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


def create_session(model: Path | bytes, config: SessionConfig) -> ort.InferenceSession:
    """A session that runs on exactly the provider asked for, or a ProviderError saying why not."""
    provider = resolve_provider(config.provider)
    if provider not in ort.get_available_providers():
        raise ProviderError(
            f"{provider} is not part of this onnxruntime build "
            f"(it has {', '.join(ort.get_available_providers())})"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = _OPT_LEVELS[config.graph_optimization]
    options.intra_op_num_threads = config.intra_op_threads
    for key, value in config.session_config_entries.items():
        options.add_session_config_entry(key, value)
    if config.profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = config.profile_prefix
    if config.optimized_model_path is not None:
        options.optimized_model_filepath = str(config.optimized_model_path)
    providers: list[Any] = [(provider, config.provider_options)]
    if isinstance(model, Path):
        load_onnx(model)  # checks the file and its external data before ONNX Runtime reads it
    source = str(model) if isinstance(model, Path) else model
    # Python-level fallbacks (TensorRT's "EP Error") are printed to stdout; keep them out of it.
    with captured_stderr() as log, redirect_stdout(io.StringIO()) as printed:
        try:
            session = ort.InferenceSession(source, sess_options=options, providers=providers)
        except LOAD_ERRORS as exc:
            raise InputError(load_failure(model, str(exc))) from None
    text = printed.getvalue() + log.text
    if session.get_providers()[0] != provider:
        raise ProviderError(
            f"ONNX Runtime could not start {provider} and fell back to "
            f"{session.get_providers()[0]}: {fallback_cause(text)}"
        )
    if text:
        sys.stderr.write(text)
    return session


def load_failure(model: Path | bytes, message: str) -> str:
    """ONNX Runtime's refusal of a model, with both versions named where it is a version."""
    name = str(model) if isinstance(model, Path) else "model"
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
    """TensorRT provider options; a cache folder saves the minutes an engine build takes."""
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


def provider_options_used(session: ort.InferenceSession) -> dict[str, dict[str, str]]:
    """The options each provider of ``session`` really runs with, defaults included."""
    return dict(session.get_provider_options())
