"""Exact fp32 rewrites that let ONNX Runtime's int8 CPU kernels take their fast paths.

Each rewrite computes the same function (max logit difference 9e-7 on ResNet50, float32
rounding) and is applied before static quantization, so the quantizer sees the shape
ONNX Runtime runs fastest (measured on a 2-core AMD EPYC with AVX-512 VNNI, ResNet50 int8;
``benchmarks/int8_gap.py`` in the repository times files made with and without them):

- ``ReduceMean`` over height and width becomes ``GlobalAveragePool``: the quantizer then
  keeps the pooling in int8 instead of leaving a DequantizeLinear, ReduceMean, QuantizeLinear
  float island (and a Transpose back to NCHW) before the classifier; 1-3%.
- the stem's 3 input channels are zero-padded to 4 inside the graph, and conv1's weights with
  a zero input channel to match. MLAS takes its fast symmetric-weight int8 convolution only
  when input channels are a multiple of 4: the stem conv went from 0.46 to 0.33 ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

STEM_CHANNELS = 4  # what MLAS's fast int8 conv path wants the input channels to be a multiple of
STEM_PAD = "stem_channel_pad"


@dataclass
class Rewrites:
    done: list[str] = field(default_factory=list)  # what was rewritten, for people
    float_nodes: set[str] = field(default_factory=set)  # to leave unquantized: the stem's Pad
    # pads the float input, so the quantizer puts one QuantizeLinear after it, not a
    # QuantizeLinear, DequantizeLinear pair before it and a float Pad between


def exact_rewrites(model: onnx.ModelProto, *, for_mlas: bool = True) -> Rewrites:
    """Apply every rewrite that fits ``model`` in place. The stem's channel padding serves
    ONNX Runtime's CPU kernels (MLAS) only; ``for_mlas=False`` (a TensorRT file) skips it, as
    it would put a float Pad before the first QuantizeLinear."""
    rewrites = Rewrites()
    if global_average_pool(model):
        rewrites.done.append("ReduceMean over H,W -> GlobalAveragePool")
    if for_mlas and pad_stem_channels(model):
        rewrites.done.append(f"stem input channels 3 -> {STEM_CHANNELS} (zero channel, weights)")
        rewrites.float_nodes.add(STEM_PAD)
    return rewrites


def _axes(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> list[int] | None:
    for attribute in node.attribute:
        if attribute.name == "axes":
            return list(attribute.ints)
    if len(node.input) > 1 and node.input[1] in constants:
        return [int(a) for a in constants[node.input[1]].ravel()]
    return None


def global_average_pool(model: onnx.ModelProto) -> bool:
    """Every ReduceMean over axes 2 and 3 of a 4-D tensor becomes GlobalAveragePool (followed
    by a Flatten where ReduceMean dropped the reduced axes)."""
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    changed = False
    nodes = []
    for node in graph.node:
        axes = _axes(node, constants) if node.op_type == "ReduceMean" else None
        if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            nodes.append(node)
            continue
        keepdims = next((a.i for a in node.attribute if a.name == "keepdims"), 1)
        pooled = node.output[0] if keepdims else f"{node.output[0]}_pooled"
        nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], node.name))
        if not keepdims:
            nodes.append(
                helper.make_node("Flatten", [pooled], [node.output[0]], f"{node.name}_flatten")
            )
        changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(nodes)
        used = {value for node in graph.node for value in node.input}
        unused = [t for t in graph.initializer if t.name not in used]
        for tensor in unused:  # the axes ReduceMean read
            graph.initializer.remove(tensor)
    return changed


def pad_stem_channels(model: onnx.ModelProto) -> bool:
    """Zero-pad the graph input's channels to STEM_CHANNELS before the one Conv reading it."""
    graph = model.graph
    source = graph.input[0].name
    readers = [node for node in graph.node if source in node.input]
    weights = {t.name: t for t in graph.initializer}
    if len(readers) != 1 or readers[0].op_type != "Conv" or readers[0].input[1] not in weights:
        return False
    conv = readers[0]
    if any(a.name == "group" and a.i != 1 for a in conv.attribute):
        return False
    weight = numpy_helper.to_array(weights[conv.input[1]])
    missing = -weight.shape[1] % STEM_CHANNELS
    if weight.ndim != 4 or missing == 0:
        return False
    padded = np.concatenate(
        [weight, np.zeros((weight.shape[0], missing, *weight.shape[2:]), weight.dtype)], axis=1
    )
    weights[conv.input[1]].CopyFrom(numpy_helper.from_array(padded, conv.input[1]))
    pads_name, padded_input = f"{source}_channel_pads", f"{source}_channels_padded"
    pads = np.array([0, 0, 0, 0, 0, missing, 0, 0], dtype=np.int64)
    graph.initializer.append(numpy_helper.from_array(pads, pads_name))
    pad = helper.make_node("Pad", [source, pads_name], [padded_input], STEM_PAD)
    conv.input[0] = padded_input
    position = list(graph.node).index(conv)
    graph.node.insert(position, pad)
    return True
