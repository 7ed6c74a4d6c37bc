"""The canary: before `serve` says ready, known inputs through every endpoint, each answer
compared with in-process ONNX Runtime on the same input.

Triton's ``ready`` means a model loaded, not that it answers right: a stub that imported another
numpy once answered every request with status 200, the right shape and no values. So the tensor
model gets seeded values for every input and the image model a JPEG drawn here, over HTTP and
over gRPC, and each answer is judged by the tolerance ``verify`` uses for the file's precision.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import onnxruntime as ort
from PIL import Image
from tritonclient.utils import np_to_triton_dtype

from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.model.labels import softmax, top_k
from resnet_deploy.model.metadata import ModelMetadata
from resnet_deploy.runtime.providers import ONNX_DTYPES
from resnet_deploy.serving.backend import IMAGE_INPUT, IMAGE_OUTPUTS, decode_image
from resnet_deploy.serving.client import open_client, parse_url, protocol_module
from resnet_deploy.tolerance import Tolerance, compare_outputs

T = TypeVar("T")
CANARY_SEED = 20240607
CANARY_ROWS = 2  # two rows, so the split of a batch back into rows is checked too
DEFAULT_SIDE = 224  # a free spatial dimension of a file without resnet-deploy metadata
IMAGE_SIDE = 256
TIMEOUT_S = 60.0  # one canary call: generous for a first request on a cold, busy CPU
# Triton's endpoints answer while the canary runs, so early clients may fill the queue; a
# rejection for that says nothing about the answers and is tried again, a bounded number of times
OVERLOADED = "maximum queue size"
ATTEMPTS = 5
RETRY_S = 0.5


class CanaryInputError(ResnetDeployError):
    """The canary cannot ask or read this model; it counts as a disagreement."""


@dataclass(frozen=True)
class CanaryCheck:
    protocol: str  # http or grpc
    model: str
    passed: bool
    detail: str  # how close the answer was, or how it differed


@dataclass(frozen=True)
class CanaryReport:
    rule: str  # the tolerance the answers were judged by
    checks: tuple[CanaryCheck, ...]
    passed: bool = field(init=False)  # every check passed

    def __post_init__(self) -> None:
        object.__setattr__(self, "passed", all(check.passed for check in self.checks))

    def failures(self) -> list[str]:
        return [f"{c.model} over {c.protocol}: {c.detail}" for c in self.checks if not c.passed]

    def summary(self) -> str:
        if not self.passed:
            return "canary failed: " + "; ".join(self.failures())
        answered = ", ".join(f"{c.model} over {c.protocol}" for c in self.checks)
        return f"canary agreed with in-process ONNX Runtime ({self.rule}): {answered}"


def run_canary(
    session: ort.InferenceSession,
    metadata: ModelMetadata | None,
    urls: dict[str, str],
    model_name: str,
    max_batch_size: int,
    image_model_name: str | None,
    top: int,
) -> CanaryReport:
    """Every endpoint in ``urls`` (protocol -> URL) asked once per model, and judged."""
    tolerance = Tolerance.for_precision(metadata.precision if metadata else "fp32")
    feeds = canary_feeds(session, max_batch_size, metadata)
    outputs = [output.name for output in session.get_outputs()]
    expected = dict(zip(outputs, session.run(outputs, feeds), strict=True))
    checks = []
    for protocol, url in urls.items():
        try:
            served = _patiently(_infer, url, model_name, feeds, outputs)
            passed, detail = _judge(expected, served, tolerance)
        except Exception as exc:  # any failure to answer is the canary's finding
            passed, detail = False, f"no usable answer: {_first_line(exc)}"
        checks.append(CanaryCheck(protocol, model_name, passed, detail))
        if image_model_name and metadata is not None:
            checks.append(
                _image_check(session, metadata, url, protocol, image_model_name, top, tolerance)
            )
    return CanaryReport(_rule(tolerance), tuple(checks))


def canary_feeds(
    session: ort.InferenceSession, max_batch_size: int, metadata: ModelMetadata | None
) -> dict[str, np.ndarray]:
    """Seeded values for every input: CANARY_ROWS rows where Triton batches, one otherwise;
    other free dimensions take the image size the file records (else 224)."""
    rng = np.random.default_rng(CANARY_SEED)
    rows = min(CANARY_ROWS, max_batch_size) if max_batch_size else 1
    side = metadata.image_size if metadata else DEFAULT_SIDE
    feeds = {}
    for spec in session.get_inputs():
        if spec.type not in ONNX_DTYPES:
            raise CanaryInputError(f"input {spec.name!r} is {spec.type}; the canary sends floats")
        shape = [
            d if isinstance(d, int) and d > 0 else (rows if i == 0 else side)
            for i, d in enumerate(spec.shape)
        ]
        feeds[spec.name] = rng.standard_normal(shape).astype(ONNX_DTYPES[spec.type])
    return feeds


def _rule(tolerance: Tolerance) -> str:
    if tolerance.elementwise:
        return f"|served - in-process| <= {tolerance.atol:g} + {tolerance.rtol:g} * |in-process|"
    return f"{tolerance.precision}: cosine >= {tolerance.min_cosine:g}, top-1 and top-5 agreement"


def _image_check(
    session: ort.InferenceSession,
    metadata: ModelMetadata,
    url: str,
    protocol: str,
    name: str,
    top: int,
    tolerance: Tolerance,
) -> CanaryCheck:
    """A JPEG to the image model: the top classes and probabilities in-process ones give."""
    data = canary_jpeg()
    logits = session.run(
        [metadata.output_name], {metadata.input_name: decode_image(data, metadata)[None]}
    )[0]
    expected = softmax(logits)[0]
    feeds = {IMAGE_INPUT: np.array([[data]], dtype=np.object_)}
    try:
        served = _patiently(_infer, url, name, feeds, list(IMAGE_OUTPUTS))
    except Exception as exc:
        return CanaryCheck(protocol, name, False, f"no usable answer: {_first_line(exc)}")
    indices, probabilities = served["class_indices"][0], served["probabilities"][0]
    error = served["error"][0, 0]
    if error:
        reason = error.decode() if isinstance(error, bytes) else str(error)
        return CanaryCheck(protocol, name, False, f"the image was refused: {reason}")
    if len(indices) != top:
        return CanaryCheck(protocol, name, False, f"{len(indices)} classes where {top} were asked")
    best = top_k(expected, top)
    wanted = np.array([score.probability for score in best])
    # Near-ties may swap places between two runs; each served class must have the probability
    # the in-process run gives it, and the k best probabilities must be the same.
    limit = tolerance.atol + tolerance.rtol * np.abs(expected[indices])
    off = np.abs(probabilities - expected[indices]) > limit
    off |= np.abs(np.sort(probabilities)[::-1] - wanted) > tolerance.atol + tolerance.rtol * wanted
    if off.any():
        served_text = ", ".join(f"{i}:{p:.4f}" for i, p in zip(indices, probabilities, strict=True))
        wanted_text = ", ".join(f"{s.class_index}:{s.probability:.4f}" for s in best)
        return CanaryCheck(
            protocol, name, False, f"top-{top} {served_text} where in-process gives {wanted_text}"
        )
    return CanaryCheck(protocol, name, True, f"top-{top} classes and probabilities agree")


def _infer(
    url: str, name: str, feeds: dict[str, np.ndarray], outputs: list[str]
) -> dict[str, np.ndarray]:
    """One request with ``feeds`` to model ``name``: the ``outputs`` it answered."""
    protocol, address = parse_url(url)
    module = protocol_module(protocol)
    binary = {"binary_data": True} if protocol == "http" else {}
    limit = {"client_timeout": TIMEOUT_S} if protocol == "grpc" else {}
    tensors = []
    for input_name, array in feeds.items():
        tensor = module.InferInput(input_name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, **binary)
        tensors.append(tensor)
    requested = [module.InferRequestedOutput(output, **binary) for output in outputs]
    client = open_client(protocol, address, TIMEOUT_S)
    try:
        result = client.infer(name, tensors, outputs=requested, **limit)
    finally:
        client.close()
    answered = {output: result.as_numpy(output) for output in outputs}
    missing = [output for output, array in answered.items() if array is None]
    if missing:
        raise CanaryInputError(f"the answer has no {', '.join(missing)}")
    return answered


def _patiently(call: Callable[..., T], *args: object) -> T:
    """``call(*args)``, again after a rejection for a full queue, at most ATTEMPTS times."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call(*args)
        except Exception as exc:
            if OVERLOADED not in str(exc) or attempt == ATTEMPTS:
                raise
            time.sleep(RETRY_S)
    raise AssertionError("unreachable")


def _judge(
    expected: dict[str, np.ndarray], served: dict[str, np.ndarray], tolerance: Tolerance
) -> tuple[bool, str]:
    """Each served output against in-process ONNX Runtime's, by ``tolerance``."""
    failures, worst, values = [], 0.0, 0
    for name, reference in expected.items():
        answer = served[name]
        if answer.shape != reference.shape:
            shapes = f"{list(answer.shape)} where in-process gives {list(reference.shape)}"
            failures.append(f"{name}: shape {shapes}")
        elif not np.issubdtype(reference.dtype, np.floating):
            if not np.array_equal(answer, reference):
                failures.append(f"{name}: values differ from in-process")
        else:
            errors = compare_outputs(reference, answer, tolerance)
            failures += [f"{name}: {failure}" for failure in tolerance.failures(errors)]
            worst, values = max(worst, errors.max_abs_error), values + errors.elements
    if failures:
        return False, "; ".join(failures)
    return True, f"max abs error {worst:.3g} over {values} values"


def canary_jpeg() -> bytes:
    """A JPEG of smooth gradients and a few shapes: deterministic, and not a flat image."""
    y, x = np.mgrid[0:IMAGE_SIDE, 0:IMAGE_SIDE].astype(np.float32) / IMAGE_SIDE
    pixels = np.stack([x, y, (x + y) / 2], axis=-1)
    pixels[64:128, 96:192] = (0.9, 0.2, 0.1)
    pixels[160:224, 32:96] = (0.1, 0.3, 0.8)
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255).astype(np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _first_line(exc: Exception) -> str:
    return str(exc).strip().partition("\n")[0] or type(exc).__name__
