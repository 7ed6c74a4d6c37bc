"""Predict: ImageNet class names for image files, with the preprocessing the model records.

Images go through the model in batches. A fixed-batch file (``export --batch N``) only accepts
exactly N images a run, so the last batch is padded with zeros and the padding's results are
dropped. A file that cannot be read as an image is reported by name and skipped: one bad file
in a folder of thousands should not cost the others their results.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resnet_deploy.data.images import list_images, load_image
from resnet_deploy.errors import InputError
from resnet_deploy.model.labels import ClassScore, imagenet_classes, softmax, top_k
from resnet_deploy.model.metadata import ModelMetadata
from resnet_deploy.model.onnxfile import ModelFile, read_model
from resnet_deploy.report.records import format_table
from resnet_deploy.runtime.memory import activation_bytes, check_fits, input_bytes
from resnet_deploy.runtime.providers import (
    SessionConfig,
    create_session,
    input_dtype,
    resolve_provider,
)
from resnet_deploy.steps import Progress, no_progress

DEFAULT_BATCH_SIZE = 8
GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class PredictOptions:
    top: int = 5
    provider: str = "cpu"
    batch_size: int | None = None  # None: the model's fixed batch, or DEFAULT_BATCH_SIZE


@dataclass(frozen=True)
class ImagePrediction:
    path: Path
    top: list[ClassScore]


@dataclass(frozen=True)
class ImageError:
    path: Path
    error: str  # the whole message, which names the file and the cause


@dataclass
class PredictReport:
    model: Path
    metadata: ModelMetadata
    provider: str
    batch_size: int
    predictions: list[ImagePrediction] = field(default_factory=list)
    errors: list[ImageError] = field(default_factory=list)


def predict(
    model: ModelFile | Path,
    inputs: Sequence[str | Path],
    options: PredictOptions = PredictOptions(),
    progress: Progress = no_progress,
) -> PredictReport:
    """Classify every image that ``inputs`` (files, folders, glob patterns) names.

    A path is read once, after the cheap checks; a ModelFile is not read again.
    """
    names = imagenet_classes()
    if not 1 <= options.top <= len(names):
        raise InputError(f"top-k must be between 1 and {len(names)} classes, got {options.top}")
    paths, errors = expand_inputs(inputs)
    if not paths:
        causes = "; ".join(e.error for e in errors)
        raise InputError(f"no images found ({causes})" if causes else "no images given")
    if not isinstance(model, ModelFile):
        model = read_model(Path(model), require_metadata=True)
    model_path, metadata = model.path, model.required_metadata()
    batch_size = choose_batch_size(options, metadata, model_path)
    check_fits(
        input_bytes(batch_size, metadata.image_size)
        + activation_bytes(metadata.arch, batch_size, metadata.image_size),
        f"predict at batch {batch_size}, {metadata.image_size}x{metadata.image_size}",
    )
    progress(f"start ONNX Runtime on {resolve_provider(options.provider)}")
    session = create_session(model, SessionConfig(provider=options.provider))
    dtype = input_dtype(session)  # float32 for fp16 and int8 files too, which keep fp32 I/O
    report = PredictReport(
        model=model_path,
        metadata=metadata,
        provider=session.get_providers()[0],
        batch_size=batch_size,
        errors=errors,
    )
    unlisted = len(report.errors)  # names that matched no image are not among the paths
    progress("images", 0, len(paths))
    for group, batch in batches(paths, metadata, batch_size, report.errors):
        padded = pad(batch, batch_size) if metadata.batch != "dynamic" else batch
        logits = session.run([metadata.output_name], {metadata.input_name: padded.astype(dtype)})
        rows = logits[0][: len(group)]  # the padding's rows are dropped
        for path, probabilities in zip(group, softmax(rows), strict=True):
            report.predictions.append(ImagePrediction(path, top_k(probabilities, options.top)))
        done = len(report.predictions) + len(report.errors) - unlisted
        progress("images", done, len(paths))
    return report


def expand_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], list[ImageError]]:
    """Image paths in the order given, each once; a pattern that matches nothing is an error.

    Patterns are expanded here too, so a quoted ``'imgs/*.jpg'`` works as the shell's would and
    a folder too large for one command line can still be named by a pattern.
    """
    paths: list[Path] = []
    errors: list[ImageError] = []
    for given in map(str, inputs):
        if Path(given).exists() or not GLOB_CHARACTERS & set(given):
            paths += expand_path(Path(given))
            continue
        matches = sorted(glob.glob(given, recursive=True))
        if not matches:
            errors.append(ImageError(Path(given), f"{given}: no file matches this pattern"))
        for match in matches:
            paths += expand_path(Path(match))
    return list(dict.fromkeys(paths)), errors


def expand_path(path: Path) -> list[Path]:
    """A folder's images, or the path itself: a missing or unreadable file is reported later."""
    return list_images(path) if path.is_dir() else [path]


def choose_batch_size(options: PredictOptions, metadata: ModelMetadata, path: Path) -> int:
    if options.batch_size is not None and options.batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {options.batch_size}")
    if metadata.batch == "dynamic":
        return options.batch_size or DEFAULT_BATCH_SIZE
    fixed = int(metadata.batch)
    if options.batch_size not in (None, fixed):
        raise InputError(
            f"{path}: has a fixed batch of {fixed}; it cannot run batches of {options.batch_size}"
        )
    return fixed


def batches(
    paths: Sequence[Path], metadata: ModelMetadata, batch_size: int, errors: list[ImageError]
) -> Iterator[tuple[list[Path], np.ndarray]]:
    """Decoded images, ``batch_size`` at a time; files that fail to decode go to ``errors``.

    Decoding as it goes keeps memory at one batch, however many images there are.
    """
    group: list[Path] = []
    arrays: list[np.ndarray] = []
    for path in paths:
        try:
            arrays.append(load_image(path, metadata.image_size, metadata.mean, metadata.std))
        except InputError as exc:
            errors.append(ImageError(path, str(exc)))
            continue
        group.append(path)
        if len(group) == batch_size:
            yield group, np.stack(arrays)
            group, arrays = [], []
    if group:
        yield group, np.stack(arrays)


def pad(batch: np.ndarray, size: int) -> np.ndarray:
    """``batch`` filled up to ``size`` rows with zeros, whose results the caller drops."""
    filler = np.zeros((size - len(batch), *batch.shape[1:]), batch.dtype)
    return np.concatenate([batch, filler])


def format_predictions(report: PredictReport) -> str:
    """One row per class shown, the image named on its first row only."""
    rows = [
        [
            str(p.path) if rank == 1 else "",
            rank,
            score.class_index,
            score.class_name,
            f"{score.probability:.4f}",
        ]
        for p in report.predictions
        for rank, score in enumerate(p.top, start=1)
    ]
    meta = report.metadata
    head = (
        f"{report.model}: {meta.arch} ({meta.variant}, {meta.precision}) on {report.provider}, "
        f"{len(report.predictions)} images classified"
    )
    table = format_table(["image", "rank", "index", "class", "probability"], rows)
    return f"{head}\n\n{table}"
