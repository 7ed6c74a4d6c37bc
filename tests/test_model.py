from __future__ import annotations

import pytest
import torch

from resnet_deploy.errors import InputError
from resnet_deploy.model.metadata import ARCHS
from resnet_deploy.model.resnet import build_model, create_resnet, resnet50
from tests.helpers import images
from tests.tutorial_oracle import tutorial_forward

# torchvision's documented parameter counts for its ResNets.
TORCHVISION_PARAMETERS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


@pytest.mark.parametrize("arch", ARCHS)
def test_parameter_counts_match_torchvision(arch: str) -> None:
    model = create_resnet(arch)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMETERS[arch]


def test_variants_put_the_stride_where_they_should() -> None:
    torchvision, seed = resnet50(variant="torchvision"), resnet50(variant="seed")
    assert torchvision.layer2[0].conv1.stride == (1, 1)
    assert torchvision.layer2[0].conv2.stride == (2, 2)
    assert seed.layer2[0].conv1.stride == (2, 2)
    assert seed.layer2[0].conv2.stride == (1, 1)
    assert isinstance(seed.avgpool, torch.nn.AvgPool2d)
    assert isinstance(torchvision.avgpool, torch.nn.AdaptiveAvgPool2d)


def test_each_stage_opens_with_a_conv_block() -> None:
    model = resnet50()
    stages = [model.layer1, model.layer2, model.layer3, model.layer4]
    assert [len(stage) for stage in stages] == [3, 4, 6, 3]
    for stage in stages:
        assert stage[0].downsample is not None
        assert all(block.downsample is None for block in stage[1:])


def test_seed_variant_is_the_tutorials_model_exactly() -> None:
    """Same weights in, bit-identical logits out: the tutorial's graph, not an approximation."""
    ours = build_model("resnet50", "seed", seed=3).model
    state = {k.replace("layer", "stage", 1): v for k, v in ours.state_dict().items()}
    x = images(2)
    with torch.inference_mode():
        assert torch.equal(ours(x), tutorial_forward(state, x))
        torchvision = build_model("resnet50", "torchvision", seed=3).model
        assert not torch.allclose(torchvision(x), tutorial_forward(state, x), atol=1e-2)


def test_the_two_variants_are_different_models() -> None:
    torchvision = build_model("resnet50", "torchvision", seed=0).model
    seed = build_model("resnet50", "seed", seed=0).model
    with torch.inference_mode():
        diff = (torchvision(images(1)) - seed(images(1))).abs().max()
    assert diff > 0.1


def test_random_weights_look_trained_and_are_deterministic() -> None:
    first = build_model("resnet50", seed=7).model
    again = build_model("resnet50", seed=7).model
    other = build_model("resnet50", seed=8).model
    with torch.inference_mode():
        logits = first(images(4))
        assert torch.equal(logits, again(images(4)))
        assert not torch.equal(logits, other(images(4)))
    # Default PyTorch init gives std ~1e-2; numerics checks need logits of order one.
    assert 0.3 < logits.std().item() < 5


def test_torchvision_variant_takes_other_image_sizes() -> None:
    model = build_model("resnet18").model
    with torch.inference_mode():
        assert model(images(1, size=160)).shape == (1, 1000)


def test_unknown_arch_is_refused() -> None:
    with pytest.raises(InputError, match="unknown arch 'resnet49'"):
        create_resnet("resnet49")
