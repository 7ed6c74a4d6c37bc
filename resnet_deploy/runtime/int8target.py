"""Which int8 file suits which machine: one rule for optimize, verify, bench, triton and serve.

``optimize --precision int8 --target T`` writes T into the file's metadata (key ``target``):

- ``cpu``: u8 activations with zero points, s8 per-channel weights. The fastest form for ONNX
  Runtime on x86 CPUs with VNNI (``avx512_vnni`` or ``avx_vnni``), which add u8 x s8 products
  straight into 32 bits.
- ``cpu-avx2``: the same with 7-bit weights (``reduce_range``). Without VNNI, ONNX Runtime
  multiplies with VPMADDUBSW, which adds two u8 x s8 products into a *saturating* 16-bit sum:
  255 * 127 * 2 = 64770 overflows 32767, while 255 * 64 * 2 = 32640 cannot. Exact on any x86.
- ``tensorrt``: symmetric s8 activations and s8 per-channel weights, every zero point 0, float
  biases and logits, one Q/DQ pair per consumer: the explicit-quantization form TensorRT builds
  int8 engines from. TensorRT has no u8 Q/DQ and no zero points; the CUDA provider has no int8
  convolutions at all (it runs Q/DQ around float kernels).

``check_target`` is the rule; ``require_target`` applies it (refusal as InputError, warnings
returned) for any command that is about to run or package a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from resnet_deploy.environment import cpu_flags
from resnet_deploy.errors import InputError
from resnet_deploy.model.metadata import INT8_TARGETS, ModelMetadata
from resnet_deploy.runtime.names import CPU, CUDA, TENSORRT

TARGETS = INT8_TARGETS
DEFAULT_TARGET = "cpu"
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


@dataclass(frozen=True)
class Scheme:
    """How ``onnxruntime.quantization.quantize_static`` is called for a target."""

    activations: str  # "uint8" or "int8"
    reduce_range: bool  # 7-bit weights
    extra_options: dict[str, object] = field(default_factory=dict)
    description: str = ""


SCHEMES = {
    "cpu": Scheme("uint8", False, {}, "uint8 activations (for x86 CPUs with VNNI)"),
    "cpu-avx2": Scheme(
        "uint8", True, {}, "uint8 activations, 7-bit weights (exact on x86 CPUs without VNNI)"
    ),
    "tensorrt": Scheme(
        "int8",
        False,
        {
            "ActivationSymmetric": True,  # zero points 0: TensorRT quantizes symmetrically only
            "WeightSymmetric": True,
            "QuantizeBias": False,  # TensorRT dequantizes int8, not the int32 bias tensors
            "DedicatedQDQPair": True,  # one consumer per Q/DQ pair, as TensorRT fuses them
            # Inputs of weighted ops are quantized, not their outputs (TensorRT's placement
            # advice): the classifier's logits stay float instead of passing through int8.
            "OpTypesToExcludeOutputQuantization": ["Gemm"],
        },
        "symmetric int8 activations, zero points 0, float biases (for TensorRT)",
    ),
}


def has_vnni(flags: frozenset[str] | None) -> bool | None:
    """True or False on x86 Linux; None where the flags are unknown (another OS or an ARM CPU)."""
    if flags is None:
        return None
    return any(flag in flags for flag in VNNI_FLAGS)


def machine_note(flags: frozenset[str] | None) -> str | None:
    """What ``optimize --target cpu`` says when the quantizing machine itself lacks VNNI."""
    if has_vnni(flags) is False:
        return (
            "this CPU has no VNNI (no avx512_vnni or avx_vnni flag): a file for the cpu target "
            "can saturate here; for this machine use the cpu-avx2 target"
        )
    return None


def file_target(model: onnx.ModelProto, metadata: ModelMetadata | None) -> str | None:
    """The target an int8 file was made for; None for a float file.

    Files written before targets existed were all u8/s8 (``cpu``); a file from another tool is
    judged by its Q/DQ types: u8 anywhere means ``cpu``, signed with zero points 0 ``tensorrt``.
    """
    if metadata is not None and metadata.precision != "int8":
        return None
    if metadata is not None and metadata.target:
        return metadata.target
    types, nonzero = quantization_types(model)
    if not types:
        return None
    if onnx.TensorProto.UINT8 in types:
        return "cpu"
    return "cpu" if nonzero else "tensorrt"


def quantization_types(model: onnx.ModelProto) -> tuple[set[int], bool]:
    """The element types of every Q/DQ zero point, and whether any zero point is not 0."""
    constants = {t.name: t for t in model.graph.initializer}
    types: set[int] = set()
    nonzero = False
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(node.input) > 2 and node.input[2] in constants:
            zero_point = constants[node.input[2]]
            types.add(zero_point.data_type)
            nonzero |= bool(onnx.numpy_helper.to_array(zero_point).any())
        elif node.op_type == "DequantizeLinear" and node.input[0] in constants:
            types.add(constants[node.input[0]].data_type)
    return types, nonzero


@dataclass
class TargetCheck:
    """The verdict for running (or packaging) one file on one provider."""

    target: str | None  # None: not an int8 file, nothing to check
    provider: str
    refusal: str | None = None
    warnings: list[str] = field(default_factory=list)


def check_target(
    model: onnx.ModelProto,
    metadata: ModelMetadata | None,
    provider: str,
    *,
    flags: frozenset[str] | None = None,
    local: bool = True,
    name: str = "the model",
) -> TargetCheck:
    """Apply the rule. ``provider`` is a full ONNX Runtime name; ``local`` False means the file
    runs elsewhere (a Triton repository), so this machine's CPU flags say nothing about it."""
    target = file_target(model, metadata)
    check = TargetCheck(target=target, provider=provider)
    if target is None:
        return check
    remake = "make one with `resnet-deploy optimize FP32.onnx --precision int8 --target {}`"
    if provider == TENSORRT and target != "tensorrt":
        check.refusal = (
            f"{name} is an int8 file for the {target} target (uint8 activations with zero "
            "points); TensorRT builds int8 engines only from symmetric int8 Q/DQ: "
            + remake.format("tensorrt")
        )
    elif provider == CUDA:
        check.warnings.append(
            f"{name} is int8: the CUDA provider has no int8 convolutions and runs it in float "
            "between Q/DQ nodes (slower than fp32); for int8 on NVIDIA GPUs use the tensorrt "
            "provider with a file for the tensorrt target"
        )
    elif provider == CPU and target == "tensorrt":
        check.warnings.append(
            f"{name} is int8 for the tensorrt target (int8 activations): ONNX Runtime's CPU "
            "kernels run it several times slower than a file for the cpu target; its numbers "
            "are right, its speed is not representative"
        )
    elif provider == CPU and target == "cpu":
        if not local:
            check.warnings.append(
                f"{name} is int8 for the cpu target: serve it on CPUs with VNNI (avx512_vnni or "
                "avx_vnni); for older x86 CPUs make it with --target cpu-avx2"
            )
        elif has_vnni(flags if flags is not None else cpu_flags()) is False:
            check.warnings.append(
                f"{name} is int8 for the cpu target, made for CPUs with VNNI; this CPU has no "
                "avx512_vnni or avx_vnni flag, so ONNX Runtime's uint8 x int8 products can "
                "saturate here: for this machine " + remake.format("cpu-avx2")
            )
    return check


def require_target(
    model: onnx.ModelProto,
    metadata: ModelMetadata | None,
    provider: str,
    *,
    flags: frozenset[str] | None = None,
    local: bool = True,
    name: str = "the model",
) -> list[str]:
    """``check_target``, raising its refusal as InputError; returns the warnings to show.

    This is the call for any command about to run a file (``serve`` included)."""
    check = check_target(model, metadata, provider, flags=flags, local=local, name=name)
    if check.refusal:
        raise InputError(check.refusal)
    return check.warnings


def tensorrt_int8_options(target: str | None) -> dict[str, str]:
    """TensorRT provider options an int8 file needs: a Q/DQ network is refused by TensorRT's
    builder unless int8 is enabled in its config (onnxruntime issue 13381)."""
    return {"trt_int8_enable": "True"} if target == "tensorrt" else {}
