"""Constants and helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import torch
from click.testing import CliRunner, Result

from resnet_deploy.cli import main

# Measured on this project's reference CPU: ONNX Runtime against eager PyTorch, random weights
# (logits of std ~1, |max| ~5), ResNet50 both variants, batches 1-8: max |diff| <= 8e-5. These
# bounds leave a 6x margin; a wrong op (one ReLU, a mis-folded BatchNorm) errs by 1e-2 or more.
ATOL = 5e-4
RTOL = 1e-3


def images(batch: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """A seeded NCHW batch of normal noise: the same inputs on every run."""
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def cli(*args: object) -> Result:
    """``resnet-deploy ARGS...`` in process; an exception escapes as itself, not as exit 1."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def tampered(
    simplify: Callable[[onnx.ModelProto], onnx.ModelProto],
) -> Callable[[onnx.ModelProto], onnx.ModelProto]:
    """``simplify``, then layer2.0.conv1's weights scaled by 5%: patched into the export, it
    makes a file that no longer matches eager, as a broken converter would."""

    def broken(proto: onnx.ModelProto) -> onnx.ModelProto:
        proto = simplify(proto)
        weight = next(t for t in proto.graph.initializer if t.name == "layer2.0.conv1.weight")
        values = onnx.numpy_helper.to_array(weight) * np.float32(1.05)
        weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
        return proto

    return broken
