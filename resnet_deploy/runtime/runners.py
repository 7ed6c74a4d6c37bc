"""Runners: the smallest objects that run one model on one engine, for timing loops.

Each runner places a batch once, where its engine reads it (``place``), then runs it as often
as asked (``infer``), waiting for the device to finish, so a clock read around ``infer`` times
the model and nothing else. Used as context managers, they give back what they hold (threads,
device memory) on exit, so one engine never competes with the next for the cores. The PyTorch
eager runner follows the same protocol from ``model.eager``: this package never imports torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from resnet_deploy.runtime.providers import ONNX_DTYPES


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
