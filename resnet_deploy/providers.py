"""The one place that creates ONNX Runtime sessions, and refuses silent CPU fallback.

ONNX Runtime lists CUDA among ``get_available_providers()`` whenever the GPU package is
installed, even on a machine with no GPU or no CUDA libraries. Asked for CUDA there, it logs
the reason to stderr and quietly runs on the CPU instead. A benchmark or a verification that
then reports "CUDA" is a lie, so every session is checked after creation and the logged cause
is turned into the error message.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

from resnet_deploy.errors import InputError, ProviderError

SHORT_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
CPU = "CPUExecutionProvider"


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
    providers: list[Any] = [(provider, config.provider_options)]
    source = str(model) if isinstance(model, Path) else model
    with captured_stderr() as log:
        session = ort.InferenceSession(source, sess_options=options, providers=providers)
    if session.get_providers()[0] != provider:
        raise ProviderError(
            f"ONNX Runtime could not start {provider} and fell back to "
            f"{session.get_providers()[0]}: {fallback_cause(log.text)}"
        )
    if log.text:
        sys.stderr.write(log.text)
    return session


def fallback_cause(log: str) -> str:
    """The most telling line ONNX Runtime logged while failing to start a provider."""
    patterns = (
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


def provider_options_used(session: ort.InferenceSession) -> dict[str, dict[str, str]]:
    """The options each provider of ``session`` really runs with, defaults included."""
    return dict(session.get_provider_options())
