"""Runners: the smallest objects that run one model on one engine, for timing loops.

Each runner places a batch once, where its engine reads it (``place``), then runs it as often
as asked (``infer``), waiting for the device to finish, so a clock read around ``infer`` times
the model and nothing else. Used as context managers, they give back what they hold (threads,
device memory) on exit, so one engine never competes with the next for the cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from resnet_deploy.errors import InputError

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


class OrtRunner:
    """ONNX Runtime, with a plain ``run`` or, given a device, IO binding on that device.

    With IO binding, the input is copied to the device once and the outputs are allocated
    there, so the timed run is the model without PCIe copies. ``"cpu"`` binds host OrtValues
    through the same code, which is how the path is tested on machines without a GPU.
    """

    def __init__(self, session: ort.InferenceSession, *, binding_device: str | None = None):
        self.session = session
        self.binding_device = binding_device

    def __enter__(self) -> OrtRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.session = None  # drops the session, its threads and its device memory

    def place(self, batch: np.ndarray) -> Any:
        name = self.session.get_inputs()[0].name
        if self.binding_device is None:
            return {name: batch}
        device = self.binding_device
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(batch, device, 0))
        for output in self.session.get_outputs():
            shape = [len(batch), *output.shape[1:]]
            if all(isinstance(d, int) for d in shape):  # fixed addresses, as CUDA graphs need
                value = ort.OrtValue.ortvalue_from_shape_and_type(
                    shape, ONNX_DTYPES[output.type], device, 0
                )
                binding.bind_ortvalue_output(output.name, value)
            else:
                binding.bind_output(output.name, device, 0)
        binding.synchronize_inputs()
        return binding

    def infer(self, feed: Any) -> list[Any]:
        """numpy arrays for a plain run; OrtValues, left on the device, with IO binding."""
        if self.binding_device is None:
            return self.session.run(None, feed)
        self.session.run_with_iobinding(feed)
        feed.synchronize_outputs()
        return feed.get_outputs()


class TorchRunner:
    """PyTorch eager under ``inference_mode``, on ``threads`` CPU threads or a CUDA device."""

    def __init__(self, model: torch.nn.Module, *, threads: int, device: str = "cpu"):
        self.model = model
        self.threads = threads
        self.device = torch.device(device)
        self._saved_threads = 0

    def __enter__(self) -> TorchRunner:
        self._saved_threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._saved_threads)

    def place(self, batch: np.ndarray) -> torch.Tensor:
        feed = torch.from_numpy(batch).to(self.device)
        self.model.to(device=self.device, dtype=feed.dtype)  # an fp16 model against eager fp16
        return feed

    def infer(self, feed: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = self.model(feed)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out
