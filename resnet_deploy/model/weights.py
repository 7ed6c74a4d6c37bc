"""Weights: realistic random ones, or a checkpoint file loaded safely and strictly.

Random weights matter more than they seem. With PyTorch's default initialisation a ResNet's
logits are around 1e-2, so any numerical tolerance passes and a verification proves nothing.
We use Kaiming-normal convolutions, varied BatchNorm affine parameters, and BatchNorm running
statistics measured on a few batches of inputs, which gives logits with a standard deviation
of order one, like a trained network.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from resnet_deploy.errors import CheckpointError, InputError
from resnet_deploy.files import check_input_file, sha256_of

RANDOM = "random"
CALIBRATION_BATCHES = 2
CALIBRATION_BATCH_SIZE = 8
CALIBRATION_IMAGE_SIZE = 224
# Prefixes that training wrappers add to every key: DataParallel/DDP and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Dictionaries that training scripts wrap a state dict in.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
_TUTORIAL_STAGE = re.compile(r"^stage([1-4])\.")


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's weights came from, recorded in the exported file's metadata."""

    source: str  # "random" or the checkpoint's resolved path
    sha256: str | None = None
    seed: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def description(self) -> str:
        if self.source == RANDOM:
            return f"random, seed {self.seed}"
        return f"{Path(self.source).name} (sha256 {self.sha256})"


def init_random_weights(model: nn.Module, seed: int) -> WeightsInfo:
    """Give ``model`` deterministic weights whose activations look like a trained network's."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(
                module.weight, mode="fan_out", nonlinearity="relu", generator=generator
            )
        elif isinstance(module, nn.BatchNorm2d):
            # Trained BatchNorm layers are far from the identity; folding them into the convs
            # must be exercised with scales and shifts that are not 1 and 0.
            nn.init.uniform_(module.weight, 0.5, 1.5, generator=generator)
            nn.init.normal_(module.bias, 0.0, 0.1, generator=generator)
        elif isinstance(module, nn.Linear):
            std = module.in_features**-0.5
            nn.init.normal_(module.weight, 0.0, std, generator=generator)
            nn.init.normal_(module.bias, 0.0, 0.1, generator=generator)
    calibrate_batchnorm(model, generator)
    return WeightsInfo(source=RANDOM, seed=seed)


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Set every BatchNorm's running statistics to the exact mean and variance of a few batches."""
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in batchnorms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average over the calibration batches
    model.train()
    shape = (CALIBRATION_BATCH_SIZE, 3, CALIBRATION_IMAGE_SIZE, CALIBRATION_IMAGE_SIZE)
    for _ in range(CALIBRATION_BATCHES):
        model(torch.randn(shape, generator=generator))
    for bn in batchnorms:
        bn.momentum = 0.1
    model.eval()


def checkpoint_format(path: Path) -> str:
    """What a weights file really is, from its first bytes rather than its name.

    Users save web pages and ONNX files under ``.pth`` names, and a partial download keeps its
    name too; each deserves its own message rather than a zip or pickle reader's.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
    if size == 0:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip" if zipfile.is_zipfile(path) else "truncated"
    if head[:1] == b"\x80":  # a pickle (PyTorch's format before 1.6)
        return "torch-pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors" if _safetensors_size(path) <= size else "truncated"
    if head.lstrip()[:1] == b"<":
        return "html"
    if len(head) > 2 and head[0] == 0x08 and head[1] < 32:  # ModelProto field 1: ir_version
        return "onnx"
    return "unknown"


def read_checkpoint(path: Path) -> dict[str, Tensor]:
    """Read a safetensors file or a PyTorch state dict, never running code from it."""
    try:
        check_input_file(path, "weights file")
    except InputError as exc:
        raise CheckpointError(str(exc).removeprefix(f"{path}: ")) from None
    size = path.stat().st_size
    kind = checkpoint_format(path)
    refusals = {
        "empty": "empty file (0 bytes)",
        "truncated": f"truncated ({size} bytes): the file ends before its index",
        "html": "an HTML page, not a checkpoint (a download that returned a web page?)",
        "onnx": "an ONNX model, not a PyTorch checkpoint (verify and bench take ONNX files)",
        "unknown": f"not a PyTorch checkpoint or safetensors file (starts with {_head(path)})",
    }
    if kind in refusals:
        raise CheckpointError(refusals[kind])
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as exc:
            raise CheckpointError(f"not a valid safetensors file ({exc})") from None
    try:
        # weights_only refuses every global outside PyTorch's allowlist; we never retry unsafely.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = found.group(1) if found else "an object outside the allowlist"
        raise CheckpointError(
            f"refused: the checkpoint tries to import {what} "
            "(loading it would run code; only plain state dicts are accepted)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"truncated or corrupt PyTorch checkpoint ({size} bytes): {exc}"
        ) from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"holds a {type(loaded).__name__}, not a state dict")
    return loaded


def _safetensors_size(path: Path) -> int:
    """The size a safetensors file must have: its header and the end of its last tensor."""
    with open(path, "rb") as f:
        header_length = int.from_bytes(f.read(8), "little")
        if header_length > path.stat().st_size:  # a length field no file of this size can hold
            return 8 + header_length
        header = f.read(header_length)
    if len(header) < header_length:
        return 8 + header_length
    try:
        entries = json.loads(header)
        return (
            8
            + header_length
            + max(
                (e["data_offsets"][1] for k, e in entries.items() if k != "__metadata__"), default=0
            )
        )
    except (ValueError, KeyError, TypeError, IndexError):
        return 0  # not ours to judge: the safetensors reader says what is wrong


def _head(path: Path) -> str:
    with open(path, "rb") as f:
        return repr(f.read(8))


def normalize_state_dict(raw: dict) -> tuple[dict[str, Tensor], list[str]]:
    """Unwrap training-script containers and map key names to ours; say what was done."""
    notes: list[str] = []
    state = raw
    for key in WRAPPER_KEYS:
        if isinstance(state.get(key), dict):
            state = state[key]
            notes.append(f"unwrapped {{'{key}': ...}}")
            break
    not_text = [k for k in state if not isinstance(k, str)]
    if not_text:
        raise CheckpointError(f"not a state dict: key {not_text[0]!r} is not a string")
    not_tensors = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"not a state dict: {len(not_tensors)} entries are not tensors "
            f"({', '.join(map(str, not_tensors[:5]))})"
        )
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
            notes.append(f"stripped the '{prefix}' prefix")
    if any(_TUTORIAL_STAGE.match(k) for k in state):
        state = {_TUTORIAL_STAGE.sub(r"layer\1.", k): v for k, v in state.items()}
        notes.append("mapped the tutorial's stageN.* names to layerN.*")
    return state, notes


def check_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Refuse any checkpoint that would load only partly, listing every offending key."""
    expected = model.state_dict()
    # Running-batch counters only matter for training; old torchvision checkpoints lack them.
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("wrong shapes", misshaped),
        )
        if keys
    ]
    if problems:
        raise CheckpointError("checkpoint does not fit the model: " + "; ".join(problems))
    for key in sorted(set(state) & set(expected)):
        value, wanted = state[key], expected[key]
        if wanted.is_floating_point() and not value.is_floating_point():
            raise CheckpointError(f"{key}: {value.dtype} values, expected floating point")
        if wanted.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{key}: holds NaN or infinite values")
        if not wanted.is_floating_point() and (value.is_floating_point() or value.is_complex()):
            raise CheckpointError(f"{key}: {value.dtype} values, expected integers")


def load_weights(model: nn.Module, path: Path) -> WeightsInfo:
    """Load a checkpoint file into ``model`` strictly, or raise listing what does not fit."""
    path = path.resolve()
    try:
        state, notes = normalize_state_dict(read_checkpoint(path))
        check_state_dict(model, state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model.load_state_dict(state, strict=False)
    model.eval()
    return WeightsInfo(source=str(path), sha256=sha256_of(path), notes=tuple(notes))
