"""Where an ONNX model first departs from the eager model, layer by layer.

ONNX side: intermediate values are added as graph outputs on an in-memory copy of the model.
Eager side: forward hooks capture the same points. The two are matched by name: exported
Conv weights keep their module paths (``layer3.2.conv2.weight``), so a Conv node names its
module, and BatchNorm folded into it means its output is the eager BatchNorm's output.
From the convs the graph gives the rest: an activation right after a conv, and each residual
block's output (the activation after the block's Add). A file whose weights carry other names
is matched by topology instead: block outputs in order, the stem, the logits.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from resnet_deploy.model.resnet import BasicBlock, Bottleneck
from resnet_deploy.runtime.providers import SessionConfig, create_session

# A point is beyond tolerance when its error, relative to the RMS of the eager activation, is
# over this many times the fp32 noise floor at that point (eager float64 against eager float32)
# and over the precision's own floor (Tolerance.layer_rel_error). A correct fp32 export stays
# within 2x the noise floor at every point; a conv channel scaled by 5% shows 20,000x at its conv.
NOISE_FACTOR = 100.0


@dataclass(frozen=True)
class Point:
    """One place compared: an eager module path and the ONNX value that holds its output."""

    name: str  # "conv1", "layer3.2.conv2", "layer3.2.conv2 relu", "layer3.2", "maxpool", "logits"
    kind: str  # conv (its BatchNorm folded in), activation, block, stem, output
    onnx_value: str


@dataclass(frozen=True)
class LayerError:
    name: str
    kind: str
    onnx_value: str
    max_abs_error: float
    rel_error: float  # max |onnx - eager| / RMS of the eager activation
    noise_floor_rel: float  # the same measure for eager float64 against eager float32
    limit_rel: float  # rel_error beyond this is beyond tolerance
    beyond_tolerance: bool


@dataclass(frozen=True)
class Localization:
    batch_size: int
    image_size: int
    mapping: str  # "names" or "topology"
    first_divergence: LayerError | None
    layers: list[LayerError]
    unmatched: list[str]  # eager points the ONNX graph has no value for, in eager order


def localize(
    proto: onnx.ModelProto,
    model: nn.Module,
    batch: np.ndarray,
    config: SessionConfig,
    *,
    input_name: str,
    min_rel_error: float,
) -> Localization:
    """Compare every matched intermediate value of ``proto`` with ``model`` on ``batch``."""
    eager32 = capture(model, batch)
    eager64 = capture(copy.deepcopy(model).double(), batch.astype(np.float64))
    points, mapping = match_points(proto, model, set(eager32))
    exposed = expose(proto, [p.onnx_value for p in points])
    session = create_session(exposed.SerializeToString(), config)
    names = [p.onnx_value for p in points]
    values = dict(zip(names, session.run(names, {input_name: batch}), strict=True))
    layers = [
        layer_error(p, eager32[p.name], eager64[p.name], values[p.onnx_value], min_rel_error)
        for p in points
    ]
    matched = {p.name for p in points}
    return Localization(
        batch_size=len(batch),
        image_size=batch.shape[-1],
        mapping=mapping,
        first_divergence=next((layer for layer in layers if layer.beyond_tolerance), None),
        layers=layers,
        unmatched=[name for name in eager32 if name not in matched],
    )


def layer_error(
    point: Point, eager: Tensor, eager64: Tensor, onnx_value: np.ndarray, min_rel_error: float
) -> LayerError:
    """The error at one point, relative to the activation's RMS, and its limit there."""
    reference = eager.numpy().astype(np.float64)
    rms = float(np.sqrt(np.mean(reference**2))) or 1.0
    noise = float(np.max(np.abs(eager64.numpy() - reference))) / rms
    limit = max(NOISE_FACTOR * noise, min_rel_error)
    max_abs = float("inf")  # a shape mismatch or a non-finite value is beyond any tolerance
    if onnx_value.shape == reference.shape:
        with np.errstate(invalid="ignore"):
            diff = np.abs(onnx_value.astype(np.float64) - reference)
        if np.all(np.isfinite(diff)):
            max_abs = float(np.max(diff))
    rel = max_abs / rms
    beyond = not rel <= limit
    return LayerError(point.name, point.kind, point.onnx_value, max_abs, rel, noise, limit, beyond)


def capture(model: nn.Module, batch: np.ndarray) -> dict[str, Tensor]:
    """The eager model's activations at every point ``match_points`` knows, in call order."""
    names = {module: name for name, module in model.named_modules()}
    convs: dict[int, tuple[str, Tensor]] = {}  # id of a conv (or conv+BN) output -> its conv
    found: dict[str, Tensor] = {}

    def produced_by_conv(tensor: Tensor) -> str | None:
        entry = convs.get(id(tensor))
        return entry[0] if entry is not None and entry[1] is tensor else None

    def on_conv(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        found[names[module]] = output
        convs[id(output)] = (names[module], output)

    def on_batchnorm(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        conv = produced_by_conv(inputs[0])
        if conv is not None:
            found[conv] = output  # ONNX folds this BatchNorm into the conv
            convs[id(output)] = (conv, output)

    def on_activation(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        conv = produced_by_conv(inputs[0])
        if conv is not None:
            found[f"{conv} relu"] = output

    def on_output(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            found[name] = output

        return hook

    hooks = {nn.Conv2d: on_conv, nn.BatchNorm2d: on_batchnorm, nn.ReLU: on_activation}
    handles = []
    for module, name in names.items():
        hook = hooks.get(type(module))
        if isinstance(module, (BasicBlock, Bottleneck)) or name == "maxpool":
            hook = on_output(name)
        if hook is not None:
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            found["logits"] = model(torch.from_numpy(batch.copy()))
    finally:
        for handle in handles:
            handle.remove()
    return found


def match_points(
    proto: onnx.ModelProto, model: nn.Module, eager_points: set[str]
) -> tuple[list[Point], str]:
    """The ONNX values holding the eager points, in graph order, and how they were matched."""
    graph = proto.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {t.name for t in graph.initializer}

    def follow(value: str, ops: tuple[str, ...] | None = None) -> str | None:
        """The output of the one node ``value`` feeds, if that node is one of ``ops`` (default:
        any single-input op, such as an activation), and nothing else reads ``value``."""
        users = consumers.get(value, [])
        if len(users) != 1:
            return None
        user = users[0]
        fits = user.op_type in ops if ops is not None else len(user.input) == 1
        return user.output[0] if fits else None

    blocks = [n for n, m in model.named_modules() if isinstance(m, (BasicBlock, Bottleneck))]
    conv_module: dict[str, str] = {}  # ONNX value of a conv (BN folded) -> module path
    points: list[Point] = []
    for node in graph.node:
        weight = node.input[1] if node.op_type == "Conv" and len(node.input) > 1 else ""
        module = weight.removesuffix(".weight")
        if weight in initializers and module in eager_points:
            value = follow(node.output[0], ("BatchNormalization",)) or node.output[0]
            conv_module[value] = module
    convs_named = sum(node.op_type == "Conv" for node in graph.node) == len(conv_module) > 0

    if convs_named:
        for node in graph.node:
            if node.output[0] in conv_module:
                name = conv_module[node.output[0]]
                points.append(Point(name, "conv", node.output[0]))
                activation = follow(node.output[0])
                if activation is not None and f"{name} relu" in eager_points:
                    points.append(Point(f"{name} relu", "activation", activation))
            elif node.op_type == "Add":
                block = block_of(node, producer, conv_module, blocks)
                if block is not None:
                    points.append(Point(block, "block", follow(node.output[0]) or node.output[0]))
            elif node.op_type == "MaxPool" and "maxpool" in eager_points:
                points.append(Point("maxpool", "stem", node.output[0]))
        mapping = "names"
    else:
        adds = [n for n in graph.node if n.op_type == "Add"]
        if len(adds) == len(blocks):
            for node, block in zip(adds, blocks, strict=True):
                points.append(Point(block, "block", follow(node.output[0]) or node.output[0]))
        pools = [n for n in graph.node if n.op_type == "MaxPool"]
        if len(pools) == 1 and "maxpool" in eager_points:
            points.insert(0, Point("maxpool", "stem", pools[0].output[0]))
        mapping = "topology"
    points.append(Point("logits", "output", graph.output[0].name))
    return points, mapping


def block_of(
    add: onnx.NodeProto,
    producer: dict[str, onnx.NodeProto],
    conv_module: dict[str, str],
    blocks: list[str],
) -> str | None:
    """The residual block an Add closes: the block of a conv feeding it, directly or through
    one activation (the seed variant applies a ReLU before the add)."""
    for value in add.input:
        for _ in range(2):
            owners = [b for b in blocks if conv_module.get(value, "").startswith(b + ".")]
            if owners:
                return max(owners, key=len)
            node = producer.get(value)
            if node is None or len(node.input) != 1:
                break
            value = node.input[0]
    return None


def expose(proto: onnx.ModelProto, values: list[str]) -> onnx.ModelProto:
    """A copy of ``proto`` whose graph outputs also include ``values``."""
    exposed = copy.deepcopy(proto)
    present = {o.name for o in exposed.graph.output}
    for value in values:
        if value not in present:
            exposed.graph.output.append(onnx.ValueInfoProto(name=value))
            present.add(value)
    return exposed
