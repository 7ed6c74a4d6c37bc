"""Property-based tests: image preprocessing and checkpoint key mapping, over many inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from resnet_deploy.data.images import load_image, preprocess
from resnet_deploy.model.metadata import IMAGENET_MEAN, IMAGENET_STD
from resnet_deploy.model.resnet import create_resnet
from resnet_deploy.model.weights import WRAPPER_KEYS, WRAPPER_PREFIXES, normalize_state_dict

MEAN, STD = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
colours = st.tuples(*[st.integers(0, 255)] * 3)
sides = st.integers(1, 700)


@settings(max_examples=60, deadline=None)
@given(width=sides, height=sides, colour=colours, size=st.sampled_from([32, 160, 224]))
def test_a_solid_image_of_any_shape_becomes_its_normalised_colour(
    width: int, height: int, colour: tuple[int, int, int], size: int
) -> None:
    out = preprocess(Image.new("RGB", (width, height), colour), size)
    assert out.shape == (3, size, size) and out.dtype == np.float32
    expected = (np.asarray(colour, np.float32) / 255 - MEAN) / STD
    np.testing.assert_allclose(out, np.broadcast_to(expected[:, None, None], out.shape), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(width=st.integers(1, 400), height=st.integers(1, 400), seed=st.integers(0, 2**32 - 1))
def test_any_image_gives_values_inside_the_normalised_range(
    width: int, height: int, seed: int
) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = preprocess(Image.fromarray(pixels), 224)
    low, high = (-MEAN / STD)[:, None, None], ((1 - MEAN) / STD)[:, None, None]
    assert np.isfinite(out).all()
    assert (out >= low - 1e-6).all() and (out <= high + 1e-6).all()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    mode=st.sampled_from(["L", "LA", "RGBA", "P", "CMYK", "I;16"]),
    grey=st.integers(0, 255),
)
def test_every_mode_of_a_grey_pixel_stays_that_grey(tmp_path: Path, mode: str, grey: int) -> None:
    """A neutral grey saved in any mode must come back as the same grey in all three channels."""
    if mode == "CMYK":
        image = Image.new("CMYK", (40, 30), (0, 0, 0, 255 - grey))
    elif mode == "I;16":
        image = Image.fromarray(np.full((30, 40), grey * 257, np.uint16))
    elif mode == "P":
        image = Image.new("RGB", (40, 30), (grey,) * 3).convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        image = Image.new("RGB", (40, 30), (grey,) * 3).convert(mode)
    path = tmp_path / f"grey-{mode.replace(';', '')}-{grey}.{'jpg' if mode == 'CMYK' else 'png'}"
    image.save(path)
    out = load_image(path, 32)
    rgb = out * STD[:, None, None] + MEAN[:, None, None]
    tolerance = 2 / 255 if mode == "CMYK" else 1e-6  # JPEG is lossy
    np.testing.assert_allclose(rgb, grey / 255, atol=tolerance)


CANONICAL = list(create_resnet("resnet18").state_dict())


@settings(max_examples=80, deadline=None)
@given(
    wrapper=st.sampled_from([None, *WRAPPER_KEYS]),
    prefix=st.sampled_from(["", *WRAPPER_PREFIXES]),
    tutorial_names=st.booleans(),
    extra=st.dictionaries(st.sampled_from(["epoch", "optimizer", "lr"]), st.integers(), max_size=2),
)
def test_any_wrapping_of_a_state_dict_maps_back_to_the_canonical_keys(
    wrapper: str | None, prefix: str, tutorial_names: bool, extra: dict
) -> None:
    marker = {k: torch.tensor([float(i)]) for i, k in enumerate(CANONICAL)}
    state = {}
    for key, value in marker.items():
        if tutorial_names:
            key = key.replace("layer", "stage", 1)
        state[prefix + key] = value
    raw = {wrapper: state, **extra} if wrapper else state
    mapped, notes = normalize_state_dict(raw)
    assert list(mapped) == CANONICAL
    assert all(torch.equal(mapped[k], marker[k]) for k in CANONICAL)  # no key swapped
    assert (f"unwrapped {{'{wrapper}': ...}}" in notes) == bool(wrapper)
    assert (f"stripped the '{prefix}' prefix" in notes) == bool(prefix)
    assert ("mapped the tutorial's stageN.* names to layerN.*" in notes) == tutorial_names


@pytest.mark.parametrize("bad", ["layer1.0.conv1.weight", "stage9.0.conv1.weight"])
def test_keys_the_mapping_does_not_know_stay_as_they_are(bad: str) -> None:
    mapped, _ = normalize_state_dict({bad: torch.zeros(1)})
    assert list(mapped) == [bad]
