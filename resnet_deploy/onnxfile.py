"""Reading ONNX files users hand us, with errors that name the file and the cause."""

from __future__ import annotations

from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from resnet_deploy.errors import InputError
from resnet_deploy.metadata import ModelMetadata, read_metadata


def load_onnx(path: Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: model file not found")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{path}: not a readable ONNX model ({exc})") from None
    if not model.graph.node:
        raise InputError(f"{path}: not an ONNX model (no graph nodes)")
    return model


def load_with_metadata(path: Path) -> tuple[onnx.ModelProto, ModelMetadata]:
    """An ONNX file exported by resnet-deploy, with its metadata record."""
    model = load_onnx(path)
    metadata = read_metadata(model)
    if metadata is None:
        raise InputError(f"{path}: has no resnet-deploy metadata (was it made by `export`?)")
    return model, metadata
