"""Where ONNX Runtime placed each node: counts per provider and op type, and the CPU check.

``get_providers()[0]`` names the first provider registered, not where the nodes run. Nodes a
GPU provider does not take go silently to the CPU, with a device copy around each of them on
every run (the int8 file's int32-bias ``DequantizeLinear`` on CUDA, every QDQ node of a u8 file
on TensorRT). ONNX Runtime records the real assignment when the session option
``session.record_ep_graph_assignment_info`` is "1"; ``providers.create_session`` always sets it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnxruntime as ort

from resnet_deploy.errors import ProviderError
from resnet_deploy.runtime.names import CPU

RECORD_PLACEMENT = "session.record_ep_graph_assignment_info"
# Ops that move no activations: ONNX Runtime keeps them on the CPU on purpose when they compute
# shapes, and the copies it inserts for placement are bookkeeping. Every other node computes.
SHAPE_ONLY_OPS = frozenset(
    {
        "Shape",
        "Size",
        "Constant",
        "ConstantOfShape",
        "Range",
        "Unsqueeze",
        "Squeeze",
        "Concat",
        "Gather",
        "Slice",
        "Identity",
        "MemcpyFromHost",
        "MemcpyToHost",
    }
)


class PlacementError(ProviderError):
    """Compute nodes run on the CPU while a GPU provider was asked (--strict-placement)."""


@dataclass(frozen=True)
class Placement:
    """Node counts as ONNX Runtime assigned them, before its post-partition fusions."""

    requested: str  # the provider asked for, full name
    nodes: dict[str, int] = field(default_factory=dict)  # provider -> nodes
    op_types: dict[str, dict[str, int]] = field(default_factory=dict)  # provider -> op -> nodes
    cpu_compute_nodes: dict[str, int] = field(default_factory=dict)  # op -> nodes; GPU asked

    def summary(self) -> str:
        """One line: nodes per provider, each with its op types."""
        parts = [
            f"{provider} {count} ({_ops(self.op_types[provider])})"
            for provider, count in self.nodes.items()
        ]
        return "node placement: " + ("; ".join(parts) or "none recorded")

    def warning(self) -> str | None:
        """What a GPU run loses when compute nodes land on the CPU; None when none do."""
        if not self.cpu_compute_nodes:
            return None
        return self._cpu_nodes() + " (strict placement refuses this)"

    def _cpu_nodes(self) -> str:
        count = sum(self.cpu_compute_nodes.values())
        return (
            f"{count} compute node(s) run on {CPU}, not {self.requested}: "
            f"{_ops(self.cpu_compute_nodes)}; each run copies their tensors between devices"
        )


def node_placement(session: ort.InferenceSession) -> Placement:
    """The placement ``session`` recorded (it must have been created with RECORD_PLACEMENT)."""
    by_provider: dict[str, Counter[str]] = {}
    for subgraph in session.get_provider_graph_assignment_info():
        ops = by_provider.setdefault(subgraph.ep_name, Counter())
        ops.update(node.op_type for node in subgraph.get_nodes())
    requested = session.get_providers()[0]
    cpu_compute: dict[str, int] = {}
    if requested != CPU:
        cpu_ops = by_provider.get(CPU, Counter())
        cpu_compute = {op: n for op, n in cpu_ops.most_common() if op not in SHAPE_ONLY_OPS}
    return Placement(
        requested=requested,
        nodes={provider: sum(ops.values()) for provider, ops in by_provider.items()},
        op_types={provider: dict(ops.most_common()) for provider, ops in by_provider.items()},
        cpu_compute_nodes=cpu_compute,
    )


def check_placement(placement: Placement, *, strict: bool) -> list[str]:
    """The placement's warnings; under ``strict`` a CPU-placed compute node is an error."""
    if not placement.cpu_compute_nodes:
        return []
    if strict:
        raise PlacementError(
            f"{placement._cpu_nodes()}; refused under strict placement",
            options=["strict_placement"],
        )
    return [placement.warning()]


def _ops(counts: dict[str, int]) -> str:
    return ", ".join(f"{op} {n}" for op, n in counts.items())
