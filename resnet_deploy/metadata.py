"""What an exported file says about itself, in ONNX ``metadata_props``.

Every later command (verify, bench, optimize, predict) reads this record instead of asking the
user again which architecture, variant, weights and preprocessing the file was made from.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields

import onnx

from resnet_deploy.errors import InputError

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
    target: str = ""  # int8: the machine it was made for (int8target.TARGETS); "" before targets

    def to_props(self) -> dict[str, str]:
        """Every field as a string; tuples and None as JSON so they read back exactly."""
        return {
            key: value if isinstance(value, str) else json.dumps(value)
            for key, value in asdict(self).items()
        }

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        values = {}
        for f in fields(cls):
            if f.name not in props:
                if f.default is not MISSING:
                    continue
                raise InputError(f"metadata key {f.name!r} is missing")
            raw = props[f.name]
            values[f.name] = raw if f.type == "str" else json.loads(raw)
            if isinstance(values[f.name], list):
                values[f.name] = tuple(values[f.name])
        return cls(**values)


def write_metadata(model: onnx.ModelProto, metadata: ModelMetadata) -> None:
    """Replace our keys in ``model.metadata_props``, keeping any others already there."""
    props = metadata.to_props()
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def read_metadata(model: onnx.ModelProto) -> ModelMetadata | None:
    """The record written at export, or None for an ONNX file made by another tool."""
    props = {p.key: p.value for p in model.metadata_props}
    if "arch" not in props:
        return None
    try:
        return ModelMetadata.from_props(props)
    except (ValueError, TypeError) as exc:
        raise InputError(f"unreadable resnet-deploy metadata: {exc}") from None
