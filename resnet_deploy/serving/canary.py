"""The canary: before `serve` says ready, known inputs through every endpoint, each answer
compared with in-process ONNX Runtime on the same input.

Triton's ``ready`` means a model loaded, not that it answers right: a stub that imported another
numpy once answered every request with status 200, the right shape and no values. So the tensor
model gets a seeded batch and the image model a JPEG drawn here, over HTTP and over gRPC, through
the same client code users run (``serving.client`` reads each model's metadata and config
first), and each answer is judged by the tolerance ``verify`` uses for the file's precision.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort
from PIL import Image

from resnet_deploy.model.labels import softmax, top_k
from resnet_deploy.model.metadata import ModelMetadata
from resnet_deploy.serving.backend import IMAGE_INPUT, decode_image
from resnet_deploy.serving.client import (
    EndpointOptions,
    ModelClient,
    connect,
    open_client,
    parse_url,
    protocol_module,
)
from resnet_deploy.tolerance import Tolerance, compare_outputs

T = TypeVar("T")
CANARY_SEED = 20240607
CANARY_ROWS = 2  # two rows, so the split of a batch back into rows is checked too
IMAGE_SIDE = 256
TIMEOUT_S = 60.0  # one canary call: generous for a first request on a cold, busy CPU
# Triton's endpoints answer while the canary runs, so early clients may fill the queue; a
# rejection for that says nothing about the answers and is tried again, a bounded number of times
OVERLOADED = "maximum queue size"
ATTEMPTS = 5
RETRY_S = 0.5


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
    image_model_name: str | None,
    top: int,
) -> CanaryReport:
    """Every endpoint in ``urls`` (protocol -> URL) asked once per model, and judged."""
    tolerance = Tolerance.for_precision(metadata.precision if metadata else "fp32")
    checks = []
    for protocol, url in urls.items():
        checks.append(_tensor_check(session, url, protocol, model_name, tolerance))
        if image_model_name and metadata is not None:
            checks.append(
                _image_check(session, metadata, url, protocol, image_model_name, top, tolerance)
            )
    return CanaryReport(_rule(tolerance), tuple(checks))


def _rule(tolerance: Tolerance) -> str:
    if tolerance.elementwise:
        return f"|served - in-process| <= {tolerance.atol:g} + {tolerance.rtol:g} * |in-process|"
    return f"{tolerance.precision}: cosine >= {tolerance.min_cosine:g}, top-1 and top-5 agreement"


def _tensor_check(
    session: ort.InferenceSession, url: str, protocol: str, name: str, tolerance: Tolerance
) -> CanaryCheck:
    try:
        model = connect(EndpointOptions(url, name, timeout_s=TIMEOUT_S))
        rows = min(CANARY_ROWS, model.max_batch_size) if model.max_batch_size else None
        batch_size = rows or model.fixed_batch or 1
        shape = (batch_size, *model.dims) if model.batch_dim else (1, *model.dims)
        batch = np.random.default_rng(CANARY_SEED).standard_normal(shape).astype(model.dtype)
        with ModelClient(model, timeout_s=TIMEOUT_S) as client:
            feed = client.place(batch)
            served = _patiently(lambda: client.infer(feed))
    except Exception as exc:  # any failure to answer is the canary's finding
        return CanaryCheck(protocol, name, False, f"no usable answer: {_first_line(exc)}")
    reference = session.run([model.output_name], {model.input_name: batch})[0]
    return CanaryCheck(protocol, name, *_judge(reference, served, tolerance))


def _image_check(
    session: ort.InferenceSession,
    metadata: ModelMetadata,
    url: str,
    protocol: str,
    name: str,
    top: int,
    tolerance: Tolerance,
) -> CanaryCheck:
    data = canary_jpeg()
    logits = session.run(
        [metadata.output_name], {metadata.input_name: decode_image(data, metadata)[None]}
    )[0]
    expected = softmax(logits)[0]
    try:
        served = _patiently(lambda: _classify(url, name, data))
    except Exception as exc:
        return CanaryCheck(protocol, name, False, f"no usable answer: {_first_line(exc)}")
    indices, probabilities, error = served
    if error:
        return CanaryCheck(protocol, name, False, f"the image was refused: {error}")
    best = top_k(expected, top)
    wanted = np.array([score.probability for score in best])
    if len(indices) != top:
        return CanaryCheck(protocol, name, False, f"{len(indices)} classes where {top} were asked")
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


def _patiently(call: Callable[[], T]) -> T:
    """``call()``, again after a rejection for a full queue, at most ATTEMPTS times."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except Exception as exc:
            if OVERLOADED not in str(exc) or attempt == ATTEMPTS:
                raise
            time.sleep(RETRY_S)
    raise AssertionError("unreachable")


def _judge(reference: np.ndarray, served: np.ndarray, tolerance: Tolerance) -> tuple[bool, str]:
    if served.shape != reference.shape:
        return False, f"answered shape {list(served.shape)} where in-process gives " + str(
            list(reference.shape)
        )
    errors = compare_outputs(reference, served, tolerance)
    failures = tolerance.failures(errors)
    if failures:
        return False, "; ".join(failures)
    return True, f"max abs error {errors.max_abs_error:.3g} over {errors.elements} values"


def _classify(url: str, name: str, data: bytes) -> tuple[Any, Any, str]:
    """The image model's class indices, probabilities and error for one encoded image."""
    protocol, address = parse_url(url)
    module = protocol_module(protocol)
    client = open_client(protocol, address, TIMEOUT_S)
    limit = {"client_timeout": TIMEOUT_S} if protocol == "grpc" else {}
    try:
        tensor = module.InferInput(IMAGE_INPUT, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[data]], dtype=np.object_))
        result = client.infer(name, [tensor], **limit)
    finally:
        client.close()
    error = result.as_numpy("error")[0, 0]
    error = error.decode() if isinstance(error, bytes) else str(error)
    return result.as_numpy("class_indices")[0], result.as_numpy("probabilities")[0], error


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
