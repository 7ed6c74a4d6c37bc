"""This machine's own peak, measured in the same run as a profile: one large GEMM of the
model's precision (fp32 MatMul, or u8 x s8 MatMulInteger for int8) and one large memory copy,
so "60% of peak" needs no datasheet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from resnet_deploy.runtime.names import SPINNING
from resnet_deploy.runtime.providers import SessionConfig, create_session

PEAK_SIZE = 1024  # the GEMM measuring the peak: M = N = K
PEAK_S = 1.0
BANDWIDTH_BYTES = 1 << 27  # a copy far larger than any cache


@dataclass
class Peak:
    """The best this machine did on one large GEMM of the model's precision, in this run."""

    kind: str  # "fp32 MatMul" or "u8 x s8 MatMulInteger"
    gops_per_s: float
    bandwidth_gb_per_s: float  # a large memory copy: the roof for layers with little reuse


def measure_peak(precision: str, threads: int, seconds: float = PEAK_S) -> Peak:
    """The GEMM rate (GFLOP/s, or GOP/s for int8) and a copy's bandwidth on this machine."""
    n = PEAK_SIZE
    if precision == "int8":
        kind = "u8 x s8 MatMulInteger"
        a_type, out_type = onnx.TensorProto.UINT8, onnx.TensorProto.INT32
        node = helper.make_node("MatMulInteger", ["A", "B"], ["C"])
        a = np.random.default_rng(0).integers(0, 255, (n, n), dtype=np.uint8)
        b = np.random.default_rng(1).integers(-127, 127, (n, n), dtype=np.int8)
    else:  # fp16 files too: the CPU's float peak, the one a GEMM kernel of ONNX Runtime reaches
        dtype = np.float32
        kind = "fp32 MatMul"
        a_type = out_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        node = helper.make_node("MatMul", ["A", "B"], ["C"])
        a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
        b = np.random.default_rng(1).standard_normal((n, n)).astype(dtype)
    graph = helper.make_graph(
        [node],
        "peak",
        [helper.make_tensor_value_info("A", a_type, [n, n])],
        [helper.make_tensor_value_info("C", out_type, [n, n])],
        [numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    config = SessionConfig("cpu", intra_op_threads=threads, session_config_entries={SPINNING: "1"})
    session = create_session(model.SerializeToString(), config)
    session.run(None, {"A": a})
    best = float("inf")
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        session.run(None, {"A": a})
        best = min(best, time.perf_counter() - begin)
    source = np.ones(BANDWIDTH_BYTES // 8)
    target = np.empty_like(source)
    copy_s = float("inf")
    for _ in range(5):
        begin = time.perf_counter()
        np.copyto(target, source)
        copy_s = min(copy_s, time.perf_counter() - begin)
    return Peak(kind, 2 * n**3 / best / 1e9, 2 * BANDWIDTH_BYTES / copy_s / 1e9)
