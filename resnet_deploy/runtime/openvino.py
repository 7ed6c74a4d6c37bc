"""OpenVINO as the alternative engine: the same ONNX file, batch and threads as ONNX Runtime.

OpenVINO reads the QDQ int8 file ``optimize`` writes and runs it as int8, so the two engines
are timed on one artefact. It is compiled with the LATENCY hint (one stream, as one ONNX
Runtime session) and as many threads as ONNX Runtime gets; shapes are fixed to the batch
timed, which is what OpenVINO is fastest with. On CPUs with bf16 units OpenVINO runs float
layers in bf16 by default; the precision it chose is recorded, not changed, since that is
what a user of OpenVINO gets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from resnet_deploy.errors import InputError

ENGINES = ("openvino",)


def import_openvino() -> Any:
    """The openvino module, or an InputError saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise InputError(
            "OpenVINO is not installed: pip install openvino (or pip install "
            "'resnet-deploy[openvino]') to compare against it"
        ) from None
    return openvino


def inference_precision(compiled: Any) -> str:
    """The precision a compiled model runs its float layers in: f32, or bf16 on CPUs with it."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    return hint.to_string() if hasattr(hint, "to_string") else str(hint)


class OpenVinoRunner:
    """OpenVINO on the CPU, one infer request, the runner interface bench's loops use."""

    def __init__(self, path: str, *, batch: int, image_size: int, threads: int):
        openvino = import_openvino()
        core = openvino.Core()
        model = core.read_model(path)
        model.reshape([batch, 3, image_size, image_size])
        self.compiled = core.compile_model(
            model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        )
        self.request = self.compiled.create_infer_request()
        self.version = openvino.__version__
        self.precision = inference_precision(self.compiled)

    def __enter__(self) -> OpenVinoRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.request = self.compiled = None  # its threads and memory go with it

    def place(self, batch: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(batch, dtype=np.float32)

    def infer(self, feed: np.ndarray) -> Any:
        return self.request.infer({0: feed})
