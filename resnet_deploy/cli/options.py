"""Parameter types and the options more than one command takes, each defined once.

Every number is parsed by ``Number``, which refuses NaN, infinity and out-of-range values, so no
command can forget a check. An option whose default depends on the model (or on another option)
defaults to None and says so in its help; ``given`` then leaves it to the library's default.
A fixed default is stated once, in the decorator, and shown by click (``show_default``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from resnet_deploy.files import STDOUT
from resnet_deploy.model.metadata import (
    ARCHS,
    MAX_BATCH,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    VARIANTS,
)

MAX_THREADS = 4 * (os.cpu_count() or 1)  # past this, threads only contend (and ORT can crash)
MAX_SEED = 2**63 - 1
MAX_INT32 = 2**31 - 1


class Number(click.ParamType):
    """A finite int or float within bounds: NaN and infinity are refused at parse time."""

    def __init__(
        self,
        kind: type = float,
        low: float | None = None,
        high: float | None = None,
        *,
        low_open: bool = False,
    ) -> None:
        self.kind, self.low, self.high, self.low_open = kind, low, high, low_open
        self.name = "integer" if kind is int else "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = self.kind(str(value).strip())
            except (ValueError, OverflowError):
                self.fail(f"{value!r} is not a {'whole number' if self.kind is int else 'number'}")
        if self.kind is float and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number")
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            bound = "above" if self.low_open else "at least"
            self.fail(f"must be {bound} {self.low:g}, got {value}")
        if self.high is not None and number > self.high:
            self.fail(f"must be at most {self.high:g}, got {value}")
        return number


POSITIVE = Number(float, 0, low_open=True)
NON_NEGATIVE = Number(float, 0)
COUNT = Number(int, 1, MAX_INT32)  # runs, samples, queries: at least one
SEED = Number(int, 0, MAX_SEED)
IMAGE_SIZE = Number(int, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
BATCH = Number(int, 1, MAX_BATCH)
PORT = Number(int, 0, 65535)
TOP_K = Number(int, 1, 1000)


class IntList(click.ParamType):
    """``1,8,32``: whole numbers separated by commas, each within bounds."""

    name = "N,N,..."

    def __init__(self, low: int = 1, high: int = MAX_BATCH) -> None:
        self.item = Number(int, low, high)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        parts = [part.strip() for part in str(value).split(",")]
        if not all(parts):
            self.fail(f"expected whole numbers separated by commas, such as 1,8,32, got {value!r}")
        return tuple(self.item.convert(part, param, ctx) for part in parts)


BATCH_SIZES = IntList()

MODEL_FILE = click.Path(dir_okay=False, path_type=Path)  # existence: checked by onnxfile
OUTPUT_FILE = click.Path(dir_okay=False, path_type=Path)
OUTPUT_FOLDER = click.Path(file_okay=False, path_type=Path)


def given(**values: Any) -> dict[str, Any]:
    """Only the options the user gave: the rest take the library's own defaults."""
    return {key: value for key, value in values.items() if value is not None}


def options(*decorators: Callable) -> Callable:
    """Apply several click decorators as one, in the order they are listed."""

    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def json_option(help_text: str = "Write the result as one JSON record to FILE (- for stdout)."):
    return click.option(
        "--json",
        "json_out",
        is_flag=False,
        flag_value=STDOUT,
        default=None,
        metavar="[FILE]",
        help=help_text,
    )


def force_option(help_text: str = "Overwrite existing output files.") -> Callable:
    return click.option("--force", is_flag=True, help=help_text)


def output_option(help_text: str) -> Callable:
    return click.option("-o", "--output", type=OUTPUT_FILE, help=help_text)


def plot_option(help_text: str, name: str = "plot_out") -> Callable:
    return click.option("--plot", name, type=OUTPUT_FILE, help=help_text)


provider_option = click.option(
    "--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt."
)

strict_placement_option = click.option(
    "--strict-placement", is_flag=True, help="GPU: fail if compute nodes land on the CPU."
)


def spin_option(default: bool) -> Callable:
    return click.option(
        "--spin/--no-spin", default=default, show_default=True, help="Idle ORT threads spin."
    )


def batch_sizes_option(help_text: str, default: str | None = None) -> Callable:
    return click.option(
        "--batch-sizes",
        type=BATCH_SIZES,
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def batch_size_option(help_text: str | None = None, default: int | None = None) -> Callable:
    return click.option(
        "--batch-size",
        type=BATCH,
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def max_batch_option(help_text: str | None = None, default: int | None = None) -> Callable:
    return click.option(
        "--max-batch", type=BATCH, default=default, show_default=default is not None, help=help_text
    )


def threads_option(help_text: str, default: int | None = None) -> Callable:
    """Intra-op threads; 0 is a value (ONNX Runtime's default) only where it is the default."""
    return click.option(
        "--threads",
        type=Number(int, 0 if default == 0 else 1, MAX_THREADS),
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def warmup_option(help_text: str | None = None, default: int | None = None) -> Callable:
    """``--warmup N``: a count of untimed runs, wherever it appears."""
    return click.option(
        "--warmup",
        "warmup_runs",
        type=Number(int, 0),
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def duration_option(help_text: str) -> Callable:
    return click.option("--duration", "duration_s", type=POSITIVE, help=help_text)


def baseline_option(help_text: str, default: str | None = None) -> Callable:
    return click.option(
        "--baseline",
        type=click.Choice(["torch", "none"]),
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def compare_option(help_text: str) -> Callable:
    return click.option("--compare", type=click.Choice(["openvino"]), help=help_text)


def samples_option(help_text: str) -> Callable:
    return click.option("--samples", type=COUNT, help=help_text)


def image_size_option(help_text: str | None = None, default: int | None = None) -> Callable:
    return click.option(
        "--image-size",
        type=IMAGE_SIZE,
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def seed_option(help_text: str) -> Callable:
    return click.option("--seed", type=SEED, default=0, show_default=True, help=help_text)


def weights_option(help_text: str, default: str | None = None) -> Callable:
    return click.option(
        "--weights", default=default, show_default=default is not None, help=help_text
    )


def arch_option(help_text: str | None = None, default: str | None = None) -> Callable:
    return click.option(
        "--arch",
        type=click.Choice(ARCHS),
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def variant_option(help_text: str | None = None, default: str | None = None) -> Callable:
    return click.option(
        "--variant",
        type=click.Choice(VARIANTS),
        default=default,
        show_default=default is not None,
        help=help_text,
    )


model_options = options(
    arch_option(default="resnet50"),
    variant_option(default="torchvision"),
    weights_option("'random' (seeded by --seed) or a .pth/.pt/.safetensors state dict.", "random"),
    seed_option("Seed of random weights."),
    image_size_option(default=224),
)


# Triton's model configuration, written by `triton` and served by `serve`


def name_option(help_text: str) -> Callable:
    return click.option("--name", default=None, help=help_text)


max_batch_size_option = click.option(
    "--max-batch-size",
    type=Number(int, 0, MAX_BATCH),
    help="Largest batch Triton forms [default: 32; 0 for a fixed-batch model].",
)

max_queue_delay_us_option = click.option(
    "--max-queue-delay-us",
    type=Number(int, 0, MAX_INT32),
    default=100,
    show_default=True,
    help="Longest a request waits for the dynamic batcher.",
)


def instances_option(help_text: str, default: int | None = None) -> Callable:
    return click.option(
        "--instances",
        type=Number(int, 1, 1024),
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def top_option(help_text: str, name: str = "top") -> Callable:
    return click.option("--top", name, type=TOP_K, default=5, show_default=True, help=help_text)
