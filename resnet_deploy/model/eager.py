"""PyTorch eager as a runner: the baseline the ONNX engines are timed and checked against.

It follows the runner protocol of ``runtime.runners`` (``place`` once, ``infer`` as often as
asked, a context manager that restores what it changed); it lives beside the model because it
needs torch, which the runtime package never imports.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import numpy as np
import torch


class TorchRunner:
    """PyTorch eager under ``inference_mode``, on ``threads`` CPU threads or a CUDA device.

    ``dtype`` (None: the batch's own) is what the model and its input run in; ``cudnn_benchmark``
    and ``tf32`` (None: leave PyTorch's setting) are set on entry and restored on exit.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        threads: int,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        cudnn_benchmark: bool | None = None,
        tf32: bool | None = None,
    ):
        self.model = model
        self.threads = threads
        self.device = torch.device(device)
        self.dtype = dtype
        self.cudnn_benchmark = cudnn_benchmark
        self.tf32 = tf32
        self._saved_threads = 0
        self._settings = ExitStack()

    def describe(self) -> str:
        """How the baseline ran, for reports: device, dtype and the cuDNN/TF32 settings."""
        dtype = str(self.dtype or "the input's dtype").removeprefix("torch.")
        text = f"PyTorch eager, {dtype} on {self.device.type}"
        if self.device.type == "cpu":
            return f"{text}, {self.threads} threads"
        benchmark = {None: "PyTorch's default", True: "on", False: "off"}[self.cudnn_benchmark]
        tf32 = {None: "PyTorch's default", True: "on", False: "off"}[self.tf32]
        return f"{text}, cudnn.benchmark {benchmark}, TF32 {tf32}"

    def __enter__(self) -> TorchRunner:
        self._saved_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        if self.cudnn_benchmark is not None:
            self._settings.enter_context(_cudnn_benchmark(self.cudnn_benchmark))
        if self.tf32 is not None:
            self._settings.enter_context(torch_tf32(self.tf32))
        return self

    def __exit__(self, *exc: object) -> None:
        self._settings.close()
        torch.set_num_threads(self._saved_threads)

    def place(self, batch: np.ndarray) -> torch.Tensor:
        feed = torch.from_numpy(batch).to(self.device, dtype=self.dtype)
        self.model.to(device=self.device, dtype=feed.dtype)  # an fp16 model against eager fp16
        return feed

    def infer(self, feed: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model(feed)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out


@contextmanager
def _cudnn_benchmark(enabled: bool) -> Iterator[None]:
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


@contextmanager
def torch_tf32(allow: bool) -> Iterator[dict[str, str | bool]]:
    """PyTorch's TF32 switches for CUDA matmuls and cuDNN convolutions set, then restored.

    Uses the ``fp32_precision`` API where this torch has it: once anything has set it, reading
    the legacy ``allow_tf32`` flags raises. Yields the switches as set, for reports.
    """
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        switches = {
            "torch.backends.cuda.matmul.fp32_precision": (matmul, "fp32_precision"),
            "torch.backends.cudnn.conv.fp32_precision": (conv, "fp32_precision"),
        }
        value: str | bool = "tf32" if allow else "ieee"
    else:
        switches = {
            "torch.backends.cuda.matmul.allow_tf32": (matmul, "allow_tf32"),
            "torch.backends.cudnn.allow_tf32": (torch.backends.cudnn, "allow_tf32"),
        }
        value = allow
    saved = {name: getattr(owner, attr) for name, (owner, attr) in switches.items()}
    for owner, attr in switches.values():
        setattr(owner, attr, value)
    try:
        yield {name: getattr(owner, attr) for name, (owner, attr) in switches.items()}
    finally:
        for name, (owner, attr) in switches.items():
            setattr(owner, attr, saved[name])
