"""The graph side of a profile: which PyTorch module each ONNX node computes, how much work each
Conv does, and whether an int8 graph runs quantized end to end.

The exporter names a Conv's weight after the parameter (``layer3.2.conv2.weight``), and ONNX
Runtime keeps that name in the quantized weight (``..._quantized``) or the folded bias
(``..._bias``) of the fused node; a residual add is named after its block (``layer3.2 add``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx

_PARAMETER = re.compile(
    r"^([A-Za-z_][\w.]*?)\.(?:weight|bias)(?:_quantized|_bias|_scale|_zero_point)?$"
)
# Ops that move, quantize or reshape data rather than compute in float.
_QUANTIZED = {"QuantizeLinear", "DequantizeLinear", "Transpose", "Reshape", "Flatten", "Squeeze"}
_POOLS = {
    "MaxPool": "maxpool",
    "NhwcMaxPool": "maxpool",
    "ReduceMean": "avgpool",
    "GlobalAveragePool": "avgpool",
    "QLinearGlobalAveragePool": "avgpool",
}


@dataclass
class GraphCheck:
    """What the optimized graph runs: for int8, every Conv and Add quantized, nothing in float."""

    ops: dict[str, int]
    float_convs: list[str]  # Conv nodes left in float in an int8 model
    float_adds: list[str]  # Add nodes neither quantized nor fused into a conv
    float_islands: list[str]  # float nodes between a DequantizeLinear and a QuantizeLinear
    fused: bool  # int8: all three lists empty


def conv_work(model: onnx.ModelProto, batch: int, precision: str) -> dict[str, tuple[float, float]]:
    """Per Conv/Gemm module: (GOP per run, bytes read and written per run) at ``batch``."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.dim_value > 0 else batch for d in dims]
    initializers = {t.name: list(t.dims) for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    element = 1 if any(n.op_type == "QuantizeLinear" for n in model.graph.node) else 4
    element = (
        2
        if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
        else element
    )
    work = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        weight = _weight_initializer(node.input[1], producer, initializers)
        out = shapes.get(node.output[0])
        inp = shapes.get(node.input[0])
        if weight is None or not out or not inp:
            continue
        module = _PARAMETER.match(weight)
        if module is None:
            continue
        dims = initializers[weight]
        per_output = int(np.prod(dims[1:])) if node.op_type == "Conv" else dims[-1]
        outputs = int(np.prod(out))
        gop = 2 * outputs * per_output / 1e9
        moved = element * (int(np.prod(inp)) + int(np.prod(dims)) + outputs)
        work[module[1]] = (gop, moved)
    return work


def _weight_initializer(
    value: str, producer: dict[str, onnx.NodeProto], initializers: dict[str, list[int]]
) -> str | None:
    """The initializer a weight input comes from, directly or through a DequantizeLinear."""
    if value in initializers:
        return value
    node = producer.get(value)
    if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in initializers:
        return node.input[0]
    return None


def layer_names(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> PyTorch module (``layer1.0.conv2``, ``layer1.0 add``, ``maxpool``) for every
    node that can be placed; the rest keep their node names."""
    initializers = {t.name: list(t.dims) for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    names: dict[str, str] = {}
    for node in model.graph.node:
        for value in node.input[1:]:
            weight = _weight_initializer(value, producer, initializers)
            found = _PARAMETER.match(weight or "")
            if found and (node.op_type != "DequantizeLinear"):
                names[node.name] = found[1]
                break
    for node in model.graph.node:
        if node.name in names:
            continue
        if node.op_type in _POOLS:
            names[node.name] = _POOLS[node.op_type]
        elif node.op_type in ("Add", "QLinearAdd", "Sum"):
            block = _block_of(node, producer, names)
            if block is not None:
                names[node.name] = f"{block} add"
    return names


def _block_of(
    node: onnx.NodeProto, producer: dict[str, onnx.NodeProto], names: dict[str, str]
) -> str | None:
    """The residual block (``layer1.0``) whose conv feeds ``node``, within two hops."""
    for value in node.input:
        for _ in range(3):
            source = producer.get(value)
            if source is None:
                break
            module = names.get(source.name, "")
            if module.count(".") >= 2:
                return ".".join(module.split(".")[:2])
            if not source.input:
                break
            value = source.input[0]
    return None


def check_graph(model: onnx.ModelProto, precision: str) -> GraphCheck:
    """Counts the optimized graph's ops; for int8, lists every Conv, Add and float op that
    breaks the quantized chain."""
    ops: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        ops[node.op_type] += 1
    float_convs, float_adds, islands = [], [], []
    if precision == "int8":
        producer = {out: node for node in model.graph.node for out in node.output}
        consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in model.graph.node:
            for value in node.input:
                consumers[value].append(node)
        weights = {t.name for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type in ("Conv", "FusedConv"):
                float_convs.append(node.name)
            elif node.op_type in ("Add", "Sum"):
                float_adds.append(node.name)
            elif node.op_type not in _QUANTIZED and node.domain in ("", "ai.onnx"):
                fed = any(
                    (src := producer.get(v)) is not None
                    and src.op_type == "DequantizeLinear"
                    and src.input[0] not in weights
                    for v in node.input
                )
                feeds = any(c.op_type == "QuantizeLinear" for c in consumers[node.output[0]])
                if fed and feeds:
                    islands.append(f"{node.name} ({node.op_type})")
    fused = not (float_convs or float_adds or islands)
    return GraphCheck(dict(ops), float_convs, float_adds, islands, fused)
