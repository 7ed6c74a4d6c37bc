"""What an exported file says about itself, in ONNX ``metadata_props``.

Every later command (verify, bench, optimize, predict) reads this record instead of asking the
user again which architecture, variant, weights and preprocessing the file was made from. A file
can come from anywhere, so the record is untrusted input: every key is checked when it is read
(type, range, size), and a bad one is refused naming the key, before any command uses it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import MISSING, asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from resnet_deploy.errors import InputError
from resnet_deploy.model.labels import NUM_IMAGENET_CLASSES

if TYPE_CHECKING:
    import onnx

ARCHS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
VARIANTS: tuple[str, ...] = ("torchvision", "seed")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
INT8_TARGETS: tuple[str, ...] = ("cpu", "cpu-avx2", "tensorrt")  # see int8target
SEED_IMAGE_SIZE = 224  # the seed variant ends in AvgPool2d(7): 224x224 inputs only
MIN_IMAGE_SIZE = 32  # five stride-2 steps must leave at least one pixel
MAX_IMAGE_SIZE = 4096  # far past any ImageNet classifier; memory is checked per command too
MAX_BATCH = 65536
MAX_VALUE_CHARS = 4096  # no key we read is longer; a huge value is not a record of ours

# The ImageNet recipe every torchvision classifier is trained with: resize the short side to
# 256, center-crop 224, scale to [0, 1], then normalise with these per-channel statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_RESIZE_RATIO = 256 / 224


@dataclass(frozen=True)
class ModelMetadata:
    arch: str
    variant: str
    weights: str  # "random" or the checkpoint's path when exported
    weights_sha256: str  # "" for random weights
    seed: int | None  # the seed of random weights
    image_size: int
    batch: str  # "dynamic" or the fixed batch size
    opset: int
    exporter: str
    toolkit_version: str
    input_name: str = "input"
    output_name: str = "logits"
    layout: str = "NCHW"
    dtype: str = "float32"
    color: str = "RGB"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    preprocessing: str = "imagenet"  # resize 256/224 of the crop, center crop, normalise
    precision: str = "fp32"  # fp32, fp16 or int8
    calibration: str = ""  # how an int8 model was calibrated
    target: str = ""  # int8: the machine it was made for (INT8_TARGETS); "" before targets

    def to_props(self) -> dict[str, str]:
        """Every field as a string; tuples and None as JSON so they read back exactly."""
        return {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in asdict(self).items()
        }

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        """Parse and check every key; an InputError names the first bad one."""
        values = {}
        for f in fields(cls):
            if f.name not in props:
                if f.default is not MISSING:
                    continue
                raise InputError(f"metadata key {f.name!r} is missing")
            raw = props[f.name]
            if len(raw) > MAX_VALUE_CHARS:
                raise InputError(f"metadata key {f.name!r} is {len(raw)} characters long")
            if f.type == "str":
                values[f.name] = raw
                continue
            try:
                value = json.loads(raw)
            except ValueError:
                raise InputError(f"metadata key {f.name!r}: {raw[:40]!r} is not JSON") from None
            values[f.name] = tuple(value) if isinstance(value, list) else value
        for name, value in values.items():
            problem = _CHECKS.get(name, _nonempty_text)(value)
            if problem:
                raise InputError(f"metadata key {name!r}: {problem} (got {_show(value)})")
        metadata = cls(**values)
        if metadata.variant == "seed" and metadata.image_size != SEED_IMAGE_SIZE:
            raise InputError(
                f"metadata key 'image_size': the seed variant takes {SEED_IMAGE_SIZE} only "
                f"(got {metadata.image_size})"
            )
        return metadata

    @property
    def fixed_batch(self) -> int | None:
        """The batch a fixed-batch export takes, or None for a dynamic batch axis."""
        return None if self.batch == "dynamic" else int(self.batch)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _one_of(choices: tuple[str, ...]):
    return lambda value: None if value in choices else f"expected one of {', '.join(choices)}"


def _int_in(low: int, high: int):
    def check(value: Any) -> str | None:
        if not _is_int(value) or not low <= value <= high:
            return f"expected a whole number from {low} to {high}"
        return None

    return check


def _nonempty_text(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "expected a non-empty string"


def _any_text(value: Any) -> str | None:
    return None if isinstance(value, str) else "expected a string"


def _sha256(value: Any) -> str | None:
    if value == "" or re.fullmatch(r"[0-9a-f]{64}", str(value)):
        return None
    return "expected 64 hexadecimal digits or nothing"


def _seed(value: Any) -> str | None:
    if value is None or (_is_int(value) and -(2**63) <= value < 2**64):
        return None
    return "expected null or a whole number that torch.manual_seed accepts"


def _batch(value: Any) -> str | None:
    if value == "dynamic" or (
        isinstance(value, str) and value.isdigit() and 1 <= int(value) <= MAX_BATCH
    ):
        return None
    return f"expected 'dynamic' or a whole number from 1 to {MAX_BATCH}"


def _three_numbers(positive: bool):
    def check(value: Any) -> str | None:
        numbers = isinstance(value, tuple) and len(value) == 3
        numbers = numbers and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
        if not numbers:
            return "expected three finite numbers"
        if positive and min(value) <= 0:
            return "every value must be above 0"
        return None

    return check


_CHECKS = {
    "arch": _one_of(ARCHS),
    "variant": _one_of(VARIANTS),
    "weights_sha256": _sha256,
    "seed": _seed,
    "image_size": _int_in(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
    "batch": _batch,
    "opset": _int_in(1, 1000),
    "layout": _one_of(("NCHW",)),
    "dtype": _one_of(("float32",)),
    "color": _one_of(("RGB",)),
    "mean": _three_numbers(positive=False),
    "std": _three_numbers(positive=True),
    "preprocessing": _one_of(("imagenet",)),
    "precision": _one_of(PRECISIONS),
    "calibration": _any_text,
    "target": _one_of(("", *INT8_TARGETS)),
}


def write_metadata(model: onnx.ModelProto, metadata: ModelMetadata) -> None:
    """Replace our keys in ``model.metadata_props``, keeping any others already there."""
    props = metadata.to_props()
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def read_metadata(model: onnx.ModelProto, source: object = "model") -> ModelMetadata | None:
    """The record written at export, checked against the graph it describes; None for an ONNX
    file made by another tool. Errors name ``source`` (the file) and the key."""
    props = {p.key: p.value for p in model.metadata_props}
    if "arch" not in props:
        return None
    try:
        metadata = ModelMetadata.from_props(props)
    except InputError as exc:
        raise InputError(f"{source}: {exc}") from None
    graph_inputs = [i.name for i in model.graph.input]
    graph_outputs = [o.name for o in model.graph.output]
    for key, name, names in (
        ("input_name", metadata.input_name, graph_inputs),
        ("output_name", metadata.output_name, graph_outputs),
    ):
        if name not in names:
            raise InputError(
                f"{source}: metadata key {key!r}: {_show(name)} is not in the graph "
                f"({', '.join(names) or 'none'})"
            )
    _check_output_shape(model, metadata, source)
    return metadata


def _check_output_shape(model: onnx.ModelProto, metadata: ModelMetadata, source: object) -> None:
    """The eager model ends in ``[N, 1000]`` logits; a file whose declared output is anything
    else (a feature map, another class count) is not what its metadata says."""
    output = next(o for o in model.graph.output if o.name == metadata.output_name)
    dims = [d.dim_value or d.dim_param or "?" for d in output.type.tensor_type.shape.dim]
    if not output.type.tensor_type.HasField("shape"):
        return  # undeclared: compare_outputs checks the shape the session returns
    classes = dims[1] if len(dims) == 2 else None
    if len(dims) != 2 or (isinstance(classes, int) and classes != NUM_IMAGENET_CLASSES):
        shown = ", ".join(map(str, dims))
        raise InputError(
            f"{source}: output {metadata.output_name!r} has shape [{shown}], but the eager "
            f"{metadata.arch} gives [N, {NUM_IMAGENET_CLASSES}]"
        )
