"""Reading ONNX files users hand us, with errors that name the file and the cause.

An ONNX file's external data is a path stored inside the file. A downloaded model can point it
at any file on the machine (``/etc/shadow``, ``../../.ssh/id_rsa``, a symlink out of the model's
folder), and onnx and ONNX Runtime have each followed such paths in some version. We check every
location ourselves, before onnx or ONNX Runtime reads a byte of external data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from resnet_deploy.errors import InputError
from resnet_deploy.files import check_input_file, sha256_of
from resnet_deploy.model.metadata import ModelMetadata, read_metadata


def load_onnx(path: Path) -> onnx.ModelProto:
    """Parse ``path`` and its checked external data, or raise an InputError saying why not."""
    path = check_input_file(path, "model file")
    size = path.stat().st_size
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError):
        raise InputError(f"{path}: truncated or not an ONNX model ({size} bytes)") from None
    if not model.graph.node or not model.graph.output:
        raise InputError(f"{path}: not an ONNX model (no graph in its {size} bytes)")
    if external_tensors(model):
        check_external_data(model, path)
        onnx.load_external_data_for_model(model, str(path.parent))
    return model


def load_with_metadata(path: Path) -> tuple[onnx.ModelProto, ModelMetadata]:
    """An ONNX file exported by resnet-deploy, with its metadata record."""
    model = load_onnx(path)
    return model, _exported(read_metadata(model, path), path)


def _exported(metadata: ModelMetadata | None, path: Path) -> ModelMetadata:
    """The record ``export`` wrote; a file without one is refused where a command needs it."""
    if metadata is None:
        raise InputError(f"{path}: has no resnet-deploy metadata (was it made by `export`?)")
    return metadata


@dataclass(frozen=True)
class ModelFile:
    """An ONNX file read once per command and handed down, so no stage parses it again.

    ``metadata`` is None for a file resnet-deploy did not make; ``sha256`` names the exact bytes
    every record of the command describes.
    """

    path: Path
    proto: onnx.ModelProto
    metadata: ModelMetadata | None
    sha256: str

    @property
    def name(self) -> str:
        return self.path.name

    def required_metadata(self) -> ModelMetadata:
        return _exported(self.metadata, self.path)


def read_model(path: Path, *, require_metadata: bool = False) -> ModelFile:
    """Read ``path`` once: its graph (external data checked), metadata and sha256."""
    proto = load_onnx(path)
    metadata = read_metadata(proto, path)
    if require_metadata:
        _exported(metadata, path)
    return ModelFile(Path(path), proto, metadata, sha256_of(Path(path)))


def external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in _all_tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _all_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_tensors(subgraph)


def check_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Every external location must be a relative path to a file inside the model's folder,
    long enough for the bytes the tensor claims."""
    folder = path.parent.resolve()
    for tensor in external_tensors(model):
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        where = f"{path}: tensor {tensor.name!r} external data {location!r}"
        parts = re.split(r"[\\/]", location)
        if not location:
            raise InputError(f"{where}: no location given")
        if Path(location).is_absolute() or PureWindowsPath(location).drive:
            raise InputError(f"{where}: refused, an absolute path")
        if ".." in parts:
            raise InputError(f"{where}: refused, it climbs out of the model's folder ('..')")
        target = folder / location
        if not target.resolve().is_relative_to(folder):
            raise InputError(f"{where}: refused, it resolves outside the model's folder")
        if not target.is_file():
            raise InputError(f"{where}: file missing")
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else _nbytes(tensor)
        available = target.stat().st_size
        if available < offset + length:
            raise InputError(
                f"{where}: file holds {available} bytes, the tensor needs {offset + length}"
            )


def _nbytes(tensor: onnx.TensorProto) -> int:
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
