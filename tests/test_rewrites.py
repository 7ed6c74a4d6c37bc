"""The exact fp32 rewrites optimize applies before int8 quantization compute the same model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from resnet_deploy.convert.rewrites import STEM_CHANNELS, STEM_PAD, exact_rewrites
from resnet_deploy.runtime.providers import SessionConfig, create_session


def run(model: onnx.ModelProto, batch: np.ndarray) -> np.ndarray:
    session = create_session(model.SerializeToString(), SessionConfig("cpu"))
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


@pytest.mark.parametrize("variant", ["torchvision", "seed"])
def test_rewrites_are_exact(exported, variant: str):
    model = onnx.load(str(exported("resnet18", variant).output))
    rewritten = onnx.load(str(exported("resnet18", variant).output))
    rewrites = exact_rewrites(rewritten)
    ops = {node.op_type for node in rewritten.graph.node}
    assert "ReduceMean" not in ops
    # torchvision's AdaptiveAvgPool2d exports as ReduceMean; the seed variant's fixed AvgPool not
    assert ("GlobalAveragePool" in ops) == (variant == "torchvision")
    assert rewrites.float_nodes == {STEM_PAD} and "Pad" in ops
    conv1 = next(t for t in rewritten.graph.initializer if t.name == "conv1.weight")
    assert conv1.dims[1] == STEM_CHANNELS
    onnx.checker.check_model(rewritten)
    batch = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    np.testing.assert_allclose(run(rewritten, batch), run(model, batch), atol=1e-5, rtol=0)


def test_nothing_to_rewrite_is_left_alone(exported):
    model = onnx.load(str(exported("resnet18").output))
    exact_rewrites(model)
    again = exact_rewrites(model)  # already 4 channels and no ReduceMean
    assert again.done == [] and again.float_nodes == set()
