"""What verify runs: the (batch, image size) sweep a file allows, the inputs of each shape, and
the judgement of one shape against the eager model and the fp32 noise floor."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from resnet_deploy.data.images import list_images, load_batch
from resnet_deploy.errors import InputError
from resnet_deploy.model.metadata import SEED_IMAGE_SIZE
from resnet_deploy.model.weights import RANDOM
from resnet_deploy.tolerance import OutputErrors, Tolerance, compare_outputs

# 1 and 2 are what services run most; 7 is odd and not a power of two, which catches kernels
# and reshapes that only work for "nice" batch sizes. All come from one dynamic-batch file.
DEFAULT_BATCH_SIZES = (1, 2, 7)
# Files with a dynamic spatial size are verified at two sizes (the seed variant takes 224 only).
SWEEP_IMAGE_SIZES = (224, 160)
DEFAULT_RANDOM_SAMPLES = 8


class SweepOptions(Protocol):
    """What the sweep reads of verify's options (VerifyOptions has these fields)."""

    batch_sizes: tuple[int, ...] | None
    image_size: int | None
    inputs: str  # "random", a folder of images, or an NCHW .npy file
    samples: int | None
    seed: int


@dataclass(frozen=True)
class ShapeResult:
    batch_size: int
    image_size: int
    batches: int
    errors: OutputErrors
    noise_floor_max_abs: float  # eager float64 against eager float32, same inputs
    nonfinite_inputs: int
    failures: list[str]
    passed: bool


def plan_shapes(
    proto: onnx.ModelProto, options: SweepOptions, variant: str
) -> tuple[list[tuple[int, int]], str]:
    """(batch size, image size) pairs to verify, and a note on what the file fixes."""
    dims = [d.dim_value or None for d in graph_input(proto).type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise InputError(f"the model's input has {len(dims)} dimensions; expected NCHW")
    fixed_batch, height, width = dims[0], dims[2], dims[3]
    notes = []
    if fixed_batch is None:
        batch_sizes = options.batch_sizes or DEFAULT_BATCH_SIZES
        notes.append("dynamic batch")
    else:
        if options.batch_sizes not in (None, (fixed_batch,)):
            raise InputError(
                f"the file's batch size is fixed at {fixed_batch}; it cannot run batch sizes "
                f"{','.join(map(str, options.batch_sizes))}"
            )
        batch_sizes = (fixed_batch,)
        notes.append(f"batch fixed at {fixed_batch} in the file, verified at that batch only")
    if height is not None or width is not None:
        if height != width:
            raise InputError(f"the model's input is {height}x{width}; verify needs square inputs")
        if options.image_size not in (None, height):
            raise InputError(
                f"the file's image size is fixed at {height}x{width}; it cannot run "
                f"image size {options.image_size}"
            )
        sizes = [height]
        notes.append(f"image size fixed at {height}x{width} in the file, verified at that size")
    else:
        if variant == "seed" and options.image_size not in (None, SEED_IMAGE_SIZE):
            raise InputError(f"the seed variant only takes {SEED_IMAGE_SIZE}x{SEED_IMAGE_SIZE}")
        sizes = [options.image_size] if options.image_size else list(SWEEP_IMAGE_SIZES)
        if variant == "seed":
            sizes = [SEED_IMAGE_SIZE]
        notes.append("dynamic image size")
    return [(b, s) for s in sizes for b in batch_sizes], "; ".join(notes)


def graph_input(proto: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The image input (older exporters also list the weights among the graph's inputs)."""
    initializers = {t.name for t in proto.graph.initializer}
    return next(i for i in proto.graph.input if i.name not in initializers)


class InputSource:
    """The inputs of every shape: seeded random normal, images, or a user's .npy array."""

    def __init__(
        self,
        options: SweepOptions,
        shapes: list[tuple[int, int]],
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        self.seed = options.seed
        self.mean, self.std = mean, std
        self.images: list[Path] = []
        self.array: np.ndarray | None = None
        if options.inputs == RANDOM:
            self.description = f"random normal (seed {options.seed})"
            count = DEFAULT_RANDOM_SAMPLES
        elif Path(options.inputs).is_dir():
            self.images = list_images(Path(options.inputs))
            self.description = f"{len(self.images)} images from {options.inputs}"
            count = len(self.images)
        else:
            self.array = load_array(Path(options.inputs))
            self.description = f"{len(self.array)} samples from {options.inputs}"
            count = len(self.array)
            sizes = {size for _, size in shapes}
            if sizes != {self.array.shape[-1]}:
                raise InputError(
                    f"{options.inputs} holds {self.array.shape[-1]}x{self.array.shape[-1]} "
                    f"inputs; the model is verified at {', '.join(map(str, sorted(sizes)))}"
                )
        self.samples = options.samples or count
        self._decoded: dict[int, np.ndarray] = {}

    def batches(self, batch_size: int, image_size: int) -> list[np.ndarray]:
        """Enough batches to cover ``samples`` inputs; files and arrays are cycled."""
        count = math.ceil(self.samples / batch_size)
        if self.images or self.array is not None:
            pool = self.pool(image_size)
            order = np.arange(count * batch_size) % len(pool)
            return [pool[order[i * batch_size : (i + 1) * batch_size]] for i in range(count)]
        return [
            np.random.default_rng((self.seed, batch_size, image_size, i))
            .standard_normal((batch_size, 3, image_size, image_size))
            .astype(np.float32)
            for i in range(count)
        ]

    def pool(self, image_size: int) -> np.ndarray:
        if self.array is not None:
            return self.array
        if image_size not in self._decoded:
            paths = self.images[: self.samples]  # images beyond the samples are never used
            self._decoded[image_size] = load_batch(paths, image_size, self.mean, self.std)
        return self._decoded[image_size]


def load_array(path: Path) -> np.ndarray:
    """A user's own preprocessed inputs: a float32 NCHW array with 3 channels."""
    if path.suffix != ".npy":
        raise InputError(f"{path}: expected 'random', a folder of images, or a .npy file")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    if array.ndim != 4 or array.shape[1] != 3 or array.shape[2] != array.shape[3] or not len(array):
        raise InputError(f"{path}: expected an N,3,S,S array, got shape {array.shape}")
    if array.dtype != np.float32:
        raise InputError(f"{path}: expected float32 values, got {array.dtype}")
    return array


def judge_shape(
    batches: list[np.ndarray],
    actual: list[np.ndarray],
    expected: list[np.ndarray],
    precise: list[np.ndarray],
    tolerance: Tolerance,
) -> ShapeResult:
    inputs = np.concatenate(batches)
    reference = np.concatenate(expected)
    errors = compare_outputs(reference, np.concatenate(actual), tolerance)
    with np.errstate(invalid="ignore"):
        noise = np.abs(np.concatenate(precise) - reference)
    noise_floor = float(np.max(noise[np.isfinite(noise)], initial=0.0))
    nonfinite_inputs = int(np.sum(~np.isfinite(inputs)))
    failures = tolerance.failures(errors)
    if nonfinite_inputs:
        failures.insert(0, f"{nonfinite_inputs} non-finite values in the inputs")
    return ShapeResult(
        batch_size=len(batches[0]),
        image_size=batches[0].shape[-1],
        batches=len(batches),
        errors=errors,
        noise_floor_max_abs=noise_floor,
        nonfinite_inputs=nonfinite_inputs,
        failures=failures,
        passed=not failures,
    )
