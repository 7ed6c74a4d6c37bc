"""The model as Triton's Python backend runs it: one ``TritonPythonModel`` per instance.

`serve` writes a model repository whose ``model.py`` only imports this class, so each model
instance is a Triton Python-backend stub process holding its own ONNX Runtime session. A batch
goes from Triton's dynamic batcher to the session through the stub's shared memory and nothing
else: no second process and no proxy, which is what keeps the serving overhead a few
milliseconds on a small CPU (PyTriton's proxy cost about 7 ms a request here; see the README).

Everything the instance needs comes from ``instance.json`` beside its ``model.py`` (not from
the config, which any client can read): the ONNX file, the session settings, and ``kind``:
``tensor`` (the model's own tensors) or ``image`` (encoded image bytes in, top-k classes out,
one ``error`` string a row so that one client's bad file does not fail the others batched with
it; each request decodes within its own ``DecodeBudget``). The stub imports this module, so it
stays free of torch.

Two checks guard against answers that look served but are not the model's. ``initialize``
refuses to load an instance whose Python, numpy, onnxruntime or resnet_deploy is not the one
`serve` runs (``imported_packages``, handed over in ``packages``): a stub that imported another
numpy once answered every request with empty tensors. And every output is checked against the
shape, data type and byte size its config declares before the response leaves the instance.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from resnet_deploy.data.images import ACCEPTED_NAMES, DecodeBudget, open_rgb, preprocess
from resnet_deploy.errors import InputError
from resnet_deploy.model.labels import softmax, top_k
from resnet_deploy.model.metadata import ModelMetadata
from resnet_deploy.model.onnxfile import read_model
from resnet_deploy.runtime.providers import SessionConfig, create_session, input_dtype

IMAGE_INPUT = "image"
IMAGE_OUTPUTS = ("classes", "class_indices", "probabilities", "error")
CHECKED_PACKAGES = ("numpy", "onnxruntime", "resnet_deploy")
INSTANCE_FILE = "instance.json"


class BackendError(RuntimeError):
    """The instance cannot answer correctly; Triton fails the load or the request with it."""


def imported_packages() -> dict[str, str]:
    """Python and the packages the model runs on, each as a version and the folder it came from."""
    found = {"python": f"{platform.python_version()} ({sys.base_prefix})"}
    for name in CHECKED_PACKAGES:
        module = importlib.import_module(name)
        found[name] = f"{module.__version__} from {Path(module.__file__).parent}"
    return found


def package_mismatch(expected: dict[str, str], found: dict[str, str]) -> str | None:
    """What differs between the serving process's packages and this instance's, in one line."""
    differ = [
        f"{name} {found.get(name, 'missing')} where serve runs {want}"
        for name, want in expected.items()
        if found.get(name) != want
    ]
    return "; ".join(differ) or None


class TritonPythonModel:
    """Triton calls ``initialize`` once per instance, then ``execute`` with each batch."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        folder = Path(args["model_repository"]) / args["model_version"]
        settings = json.loads((folder / INSTANCE_FILE).read_text())
        self.name = config["name"]
        mismatch = package_mismatch(settings["packages"], imported_packages())
        if mismatch:
            raise BackendError(f"model {self.name}: this instance imported {mismatch}")
        self.declared = {o["name"]: declared_output(o, config) for o in config["output"]}
        model = read_model(Path(settings["model_path"]))  # once: the session and metadata
        # the SessionConfig `serve` built, so the stub's session is the one it checked
        session_config = SessionConfig(**settings["session"])
        self.session = create_session(model, session_config)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.dtype = input_dtype(self.session)
        self.kind = settings["kind"]
        self.batching = config.get("max_batch_size", 0) > 0
        if self.kind == "image":
            self.metadata = model.metadata
            self.top_k = settings["top_k"]
            self.fixed_batch = settings["fixed_batch"] or None
            self.max_rows = settings["max_rows"]

    def execute(self, requests: list[Any]) -> list[Any]:
        import triton_python_backend_utils as pb_utils

        try:
            if self.kind == "image":
                return self._classify(requests, pb_utils)
            return self._run_tensors(requests, pb_utils)
        except Exception as exc:  # a failed batch fails its requests, never the instance
            message = str(exc) if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, BackendError):
                pb_utils.Logger.log_error(message)
            return error_responses(pb_utils, message, len(requests))

    def _response(self, pb_utils: Any, arrays: dict[str, np.ndarray]) -> Any:
        """The outputs as Triton tensors, each checked against what the config declares."""
        tensors = []
        for name, array in arrays.items():
            tensor = pb_utils.Tensor(name, np.ascontiguousarray(array))
            problem = self.declared[name].problem(tuple(tensor.shape()), tensor.as_numpy())
            if problem:
                raise BackendError(f"model {self.name} output {name}: {problem}")
            tensors.append(tensor)
        return pb_utils.InferenceResponse(tensors)

    def _run_tensors(self, requests: list[Any], pb_utils: Any) -> list[Any]:
        """All requests as one ONNX Runtime run (each may hold several rows), split back."""
        names, outputs = self.inputs, self.outputs
        feeds = [
            {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in names} for r in requests
        ]
        if not self.batching:  # a fixed-batch model: Triton forms no batches
            results = [self.session.run(outputs, feed) for feed in feeds]
        else:
            rows = np.cumsum([len(feed[names[0]]) for feed in feeds])[:-1]
            joined = {n: np.concatenate([feed[n] for feed in feeds]) for n in names}
            ran = self.session.run(outputs, joined)
            results = list(zip(*(np.split(array, rows) for array in ran), strict=True))
        return [self._response(pb_utils, dict(zip(outputs, r, strict=True))) for r in results]

    def _classify(self, requests: list[Any], pb_utils: Any) -> list[Any]:
        """Every row of every request decoded on its own; the good ones run together."""
        payloads = [pb_utils.get_input_tensor_by_name(r, IMAGE_INPUT).as_numpy() for r in requests]
        rows = []
        for payload in payloads:
            # each request pays for its own rows: one client's large images never refuse
            # another client's rows batched with them
            budget = DecodeBudget()
            rows += [(bytes(data), budget) for data in payload.reshape(-1)]
        k = self.top_k
        errors = np.full((len(rows), 1), b"", dtype=object)
        classes = np.full((len(rows), k), b"", dtype=object)
        indices = np.zeros((len(rows), k), np.int64)
        probabilities = np.zeros((len(rows), k), np.float32)
        arrays, good = [], []
        for row, (data, budget) in enumerate(rows):
            try:
                arrays.append(decode_image(data, self.metadata, budget))
                good.append(row)
            except InputError as exc:
                errors[row, 0] = str(exc).encode()
            except Exception as exc:  # a decoder bug still fails only its own row
                message = f"image: cannot be decoded ({type(exc).__name__}: {exc})"
                pb_utils.Logger.log_error(f"model {self.name}: {message}")
                errors[row, 0] = message.encode()
        if good:
            batch = np.stack(arrays).astype(self.dtype)
            logits = run_rows(self.session, self.metadata, batch, self.fixed_batch, self.max_rows)
            for row, scores in zip(good, softmax(logits), strict=True):
                best = top_k(scores, k)
                classes[row] = [score.class_name.encode() for score in best]
                indices[row] = [score.class_index for score in best]
                probabilities[row] = [score.probability for score in best]
        responses, start = [], 0
        for payload in payloads:
            end = start + payload.size
            arrays = zip(IMAGE_OUTPUTS, (classes, indices, probabilities, errors), strict=True)
            responses.append(self._response(pb_utils, {n: a[start:end] for n, a in arrays}))
            start = end
        return responses


# numpy's type for each of Triton's data types, as the config names them
NUMPY_TYPES = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}


class DeclaredOutput:
    """An output as the config declares it: its data type and dims, with the batch if any."""

    def __init__(self, data_type: str, dims: tuple[int, ...]):
        self.data_type = data_type
        self.dtype = np.dtype(NUMPY_TYPES[data_type])
        self.dims = dims  # -1: any size; with batching, the batch dimension leads as -1

    def problem(self, shape: tuple[int, ...], held: np.ndarray) -> str | None:
        """Why a tensor of ``shape`` holding ``held`` is not this output, or None."""
        fits = len(shape) == len(self.dims) and all(
            want in (-1, got) for want, got in zip(self.dims, shape, strict=True)
        )
        if not fits:
            return f"shape {list(shape)} where the config declares {list(self.dims)}"
        if held.dtype != self.dtype:
            return f"data type {held.dtype} where the config declares {self.data_type}"
        if held.shape != shape:
            return f"{list(held.shape)} values held for shape {list(shape)}"
        if self.dtype != np.object_ and held.nbytes != math.prod(shape) * self.dtype.itemsize:
            needed = math.prod(shape) * self.dtype.itemsize
            return f"{held.nbytes} bytes where shape {list(shape)} of {self.dtype} needs {needed}"
        return None


def declared_output(output: dict[str, Any], config: dict[str, Any]) -> DeclaredOutput:
    """An output of the model config Triton hands ``initialize`` (its JSON form)."""
    dims = tuple(int(d) for d in output["dims"])
    if config.get("max_batch_size", 0) > 0:
        dims = (-1, *dims)
    return DeclaredOutput(output["data_type"], dims)


def error_responses(pb_utils: Any, message: str, count: int) -> list[Any]:
    """``count`` error responses, each with its own TritonError.

    The stub copies a response's error to shared memory when it sends it, and a second copy of
    the same TritonError frees the first (``PbError::SaveToSharedMemory`` replaces its buffers):
    one error object shared by several responses made tritonserver read freed memory and crash
    as soon as one batch held several requests.
    """
    return [pb_utils.InferenceResponse(error=pb_utils.TritonError(message)) for _ in range(count)]


def decode_image(
    data: bytes, metadata: ModelMetadata, budget: DecodeBudget | None = None
) -> np.ndarray:
    """One encoded image as the model's input row, with the preprocessing it was exported with."""
    if not data:
        raise InputError(f"image: empty payload, expected encoded image bytes ({ACCEPTED_NAMES})")
    try:
        image = open_rgb(io.BytesIO(data), "image", budget=budget)
    except InputError as exc:
        raise InputError(f"{exc} ({len(data)} bytes, first {data[:8]!r})") from None
    return preprocess(image, metadata.image_size, metadata.mean, metadata.std)


def run_rows(
    session: ort.InferenceSession,
    metadata: ModelMetadata,
    rows: np.ndarray,
    fixed_batch: int | None,
    max_rows: int,
) -> np.ndarray:
    """Logits for every row, in runs the model accepts (a fixed batch is padded with zeros)."""
    size = fixed_batch or max_rows
    results = []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        if fixed_batch and len(chunk) < fixed_batch:
            filler = np.zeros((fixed_batch - len(chunk), *chunk.shape[1:]), chunk.dtype)
            padded = np.concatenate([chunk, filler])
        else:
            padded = chunk
        logits = session.run([metadata.output_name], {metadata.input_name: padded})[0]
        results.append(logits[: len(chunk)])
    return np.concatenate(results)
