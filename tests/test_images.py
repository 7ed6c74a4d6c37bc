"""Decoding and preprocessing, checked pixel by pixel on images the tests draw themselves."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import DdsImagePlugin, EpsImagePlugin, Image, ImageFile, PsdImagePlugin

from resnet_deploy.data import images
from resnet_deploy.data.images import list_images, load_batch, load_image
from resnet_deploy.errors import InputError
from resnet_deploy.model.metadata import IMAGENET_MEAN, IMAGENET_STD

RED, BLUE = (220, 20, 60), (30, 60, 200)


def normalised(rgb: tuple[int, int, int]) -> np.ndarray:
    """What one pixel of colour ``rgb`` must become, per channel."""
    pixel = np.asarray(rgb, np.float32) / 255.0
    return (pixel - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)


def assert_colour(array: np.ndarray, rgb: tuple[int, int, int]) -> None:
    expected = normalised(rgb)[:, None, None] * np.ones_like(array)
    np.testing.assert_allclose(array, expected, rtol=0, atol=1e-6)


def test_solid_colour_becomes_exactly_the_normalised_colour(tmp_path: Path) -> None:
    path = tmp_path / "solid.png"
    Image.new("RGB", (300, 200), (200, 100, 50)).save(path)
    array = load_image(path, 224)
    assert array.shape == (3, 224, 224) and array.dtype == np.float32
    assert_colour(array, (200, 100, 50))


def test_mean_and_std_come_from_the_caller(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.new("RGB", (64, 64), (51, 102, 255)).save(path)
    array = load_image(path, 32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    np.testing.assert_allclose(array[:, 0, 0], [0.2, 0.4, 1.0], atol=1e-6)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 40 wide x 20 high: left half red, right half blue. Orientation 6 says "rotate 90
    # degrees clockwise to display", which puts the left half on top.
    image = Image.new("RGB", (40, 20), BLUE)
    image.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif)
    array = load_image(path, 16)
    assert_colour(array[:, :4, :], RED)
    assert_colour(array[:, -4:, :], BLUE)


def test_resize_and_center_crop_follow_the_imagenet_recipe(tmp_path: Path) -> None:
    # 448 -> 256 (short side, 256/224 of the crop) -> center 224: the crop drops 16 of 256
    # pixels per side, i.e. 28 of the original 448. A 24-pixel red frame vanishes entirely; a
    # 36-pixel one shows at the edges.
    for frame, edge in ((24, BLUE), (36, RED)):
        image = Image.new("RGB", (448, 448), RED)
        image.paste(BLUE, (frame, frame, 448 - frame, 448 - frame))
        path = tmp_path / f"frame{frame}.png"
        image.save(path)
        array = load_image(path, 224)
        assert_colour(array[:, 112:113, 0:1], edge)
        assert_colour(array[:, 100:124, 100:124], BLUE)


def test_the_short_side_is_resized_on_wide_images(tmp_path: Path) -> None:
    # 400x200 -> 512x256 -> center 224 keeps columns 144..368 of 512, i.e. 112.5..287.5 of the
    # original: a red quarter on each side is cropped away.
    image = Image.new("RGB", (400, 200), RED)
    image.paste(BLUE, (100, 0, 300, 200))
    path = tmp_path / "wide.png"
    image.save(path)
    assert_colour(load_image(path, 224), BLUE)


@pytest.mark.parametrize(
    ("mode", "value", "rgb"),
    [
        ("L", 77, (77, 77, 77)),
        ("LA", (77, 0), (77, 77, 77)),
        ("RGBA", (10, 200, 30, 0), (10, 200, 30)),  # alpha dropped, as torchvision's loader does
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("I;16", 65535, (255, 255, 255)),
        ("I;16", 128 * 257, (128, 128, 128)),  # Pillow's own conversion would clip to 255
        ("I", 100 * 257, (100, 100, 100)),
    ],
)
def test_other_modes_become_the_right_rgb(
    tmp_path: Path, mode: str, value: object, rgb: tuple[int, int, int]
) -> None:
    path = tmp_path / ("image.tiff" if mode in ("CMYK", "I") else "image.png")
    Image.new(mode, (8, 8), value).save(path)
    assert_colour(load_image(path, 8), rgb)


def test_palette_image(tmp_path: Path) -> None:
    path = tmp_path / "palette.gif"
    image = Image.new("P", (16, 16), 1)
    image.putpalette([0, 0, 0, 240, 120, 0])
    image.save(path)
    assert_colour(load_image(path, 8), (240, 120, 0))


def test_truncated_and_fake_images_name_the_file(tmp_path: Path) -> None:
    good = tmp_path / "photo.png"
    Image.effect_noise((64, 64), 50).convert("RGB").save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:400])
    with pytest.raises(InputError, match=r"truncated.png: broken or truncated image"):
        load_image(truncated, 32)
    fake = tmp_path / "page.jpg"
    fake.write_text("<html>404</html>")
    with pytest.raises(InputError, match=r"page.jpg: cannot read image"):
        load_image(fake, 32)


def png_header(
    width: int, height: int, *, sixteen_bit_grey: bool = False, whole: bool = False
) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels, 8-bit RGB or 16-bit greyscale: 65 bytes
    holding no pixel, or with ``whole`` every (black) row, compressed as a real file would be."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    depth, colour, row_bytes = (16, 0, 2 * width) if sixteen_bit_grey else (8, 2, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = bytes(1 + row_bytes)  # filter type 0, then the row
    pixels = b"".join(packer.compress(row) for _ in range(height if whole else 0))
    pixels += packer.flush()
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def test_a_decompression_bomb_is_refused_as_such_naming_the_file(tmp_path: Path) -> None:
    # 20000 x 20000 claimed in 65 bytes: 1.2 GB once decoded. With the limit on, as our loader
    # keeps it, the file is refused at open; with it off, it would be allocated and then found
    # truncated, a different error.
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(20000, 20000))
    with pytest.raises(InputError, match=r"bomb.png: cannot read image \(.*decompression bomb"):
        load_image(path, 32)


def test_the_resize_limit_is_exact(tmp_path: Path, monkeypatch) -> None:
    # 64x32 for a 32 crop: the short side becomes round(32 * 256 / 224) = 37, the long side
    # int(37 * 64 / 32) = 74, so the resize makes 74 x 37 = 2738 pixels.
    path = tmp_path / "wide.png"
    Image.new("RGB", (64, 32), RED).save(path)
    monkeypatch.setattr(images, "MAX_RESIZED_PIXELS", 74 * 37)
    assert_colour(load_image(path, 32), RED)
    monkeypatch.setattr(images, "MAX_RESIZED_PIXELS", 74 * 37 - 1)
    with pytest.raises(InputError) as refused:
        load_image(path, 32)
    assert str(refused.value) == (
        f"{path}: a 64x32 image would be resized to 74x37 pixels for a 32x32 crop, over the "
        "limit of 2737: its aspect ratio is too extreme for the ImageNet recipe"
    )


def test_an_extreme_aspect_ratio_is_refused_before_the_resize(tmp_path: Path, monkeypatch) -> None:
    # 20000x1 in a few hundred bytes would be resized to 5,120,000 x 256 (3.9 GB of RGB). The
    # limit is Pillow's bound on decoded images, and nothing is resized before it is checked.
    path = tmp_path / "line.png"
    Image.new("RGB", (20000, 1)).save(path)

    def no_resize(*args: object, **kwargs: object) -> None:
        raise AssertionError("resized before the size was checked")

    monkeypatch.setattr(Image.Image, "resize", no_resize)
    with pytest.raises(InputError) as refused:
        load_image(path, 224)
    assert str(refused.value).startswith(
        f"{path}: a 20000x1 image would be resized to 5120000x256 pixels for a 224x224 crop, "
        f"over the limit of {Image.MAX_IMAGE_PIXELS}:"
    )


def test_list_images_sorted_recursive_by_extension(tmp_path: Path) -> None:
    for name in ("b/2.JPG", "a.png", "b/1.jpeg", ".hidden/x.png", "notes.txt", "c.webp"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a.png", "b/1.jpeg", "b/2.JPG", "c.webp"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        list_images(tmp_path / "empty")
    with pytest.raises(InputError, match="not a folder"):
        list_images(tmp_path / "a.png")


def test_load_batch_is_nchw(tmp_path: Path) -> None:
    paths = []
    for i, colour in enumerate((RED, BLUE)):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (50, 40), colour).save(paths[-1])
    batch = load_batch(paths, 32)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.float32
    assert_colour(batch[1], BLUE)


def refuse_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make decoding any pixel a test failure: limits must act on the header alone."""

    def no_load(self: object) -> None:
        raise AssertionError("pixels decoded before the size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)


def test_the_pixel_limit_is_exact_and_checked_before_decoding(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), RED).save(path)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 40 * 30)
    assert_colour(load_image(path, 16), RED)
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 40 * 30 - 1)
    refuse_decoding(monkeypatch)
    with pytest.raises(InputError) as refused:
        load_image(path, 16)
    assert str(refused.value) == (
        f"{path}: a 40x30 image (0.0 megapixels) is over the limit of 0.0 megapixels an image; "
        "scale it down"
    )


def test_a_16_bit_12000x12000_png_is_refused_from_its_header(tmp_path: Path, monkeypatch) -> None:
    # The file: 280 KB that decoded for 11 s into a 4 GB peak.
    path = tmp_path / "huge16.png"
    path.write_bytes(png_header(12000, 12000, sixteen_bit_grey=True, whole=True))
    assert path.stat().st_size < 400_000
    refuse_decoding(monkeypatch)
    with pytest.raises(
        InputError, match=r"12000x12000 image \(144.0 megapixels\) is over the limit"
    ):
        load_image(path, 224)


def test_a_budget_pays_for_headers_in_order(tmp_path: Path) -> None:
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.new("RGB", (10, 10), RED).save(small)
    Image.new("RGB", (40, 40), BLUE).save(large)
    budget = images.DecodeBudget(1000)
    images.open_rgb(small, budget=budget)
    with pytest.raises(InputError, match=r"large\.png: a 40x40 image is over what is left of the"):
        images.open_rgb(large, budget=budget)
    assert budget.left == 900  # the refused image cost nothing
    for _ in range(9):
        images.open_rgb(small, budget=budget)
    assert budget.left == 0
    with pytest.raises(InputError, match=r"budget \(0.0 of 0.0 megapixels\)"):
        images.open_rgb(small, budget=budget)


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (np.arange(65536).reshape(256, 256), np.uint16),  # mode I;16: every value
        ([[-(2**31), -5, 0, 128, 129, 65535, 65536, 2**31 - 1]], np.int32),  # mode I: any int32
    ],
)
def test_16_bit_conversion_is_rounding_and_clipping(values: list, dtype: type) -> None:
    array = np.asarray(values, dtype)
    converted = np.asarray(images.to_rgb(Image.fromarray(array)))
    expected = np.clip(np.rint(array / 257.0), 0, 255).astype(np.uint8)
    assert converted.shape == (*array.shape, 3)
    for channel in range(3):
        np.testing.assert_array_equal(converted[..., channel], expected)


def test_16_bit_conversion_holds_no_whole_image_temporary() -> None:
    # 2000x2000 16-bit: float64 temporaries of the whole image would be 32 MB each (the old
    # conversion peaked at 100 MB here). Bands of rows keep numpy's allocations to the 8-bit
    # result (4 MB) and a band's few MB.
    image = Image.fromarray(np.full((2000, 2000), 40000, np.uint16))
    tracemalloc.start()
    try:
        rgb = images.to_rgb(image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rgb.getpixel((1999, 1999)) == (156, 156, 156)
    assert peak < 10e6, f"{peak / 1e6:.0f} MB allocated converting a 4 MP 16-bit image"


ACCEPTED = "JPEG, PNG, WebP, GIF, BMP, TIFF or PPM"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"DDS |" + bytes(123), f"DDS files are not accepted, only {ACCEPTED}"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", f"EPS files are not accepted, only {ACCEPTED}"),
        (b"8BPS" + bytes(40), f"PSD files are not accepted, only {ACCEPTED}"),
        (b"\x89PNG\r\n\x1a\n" + bytes(30), "a broken PNG header"),
        (b"<html>404</html>", f"not a {ACCEPTED} file"),
    ],
)
def test_formats_outside_the_list_are_named_and_never_read(
    tmp_path: Path, monkeypatch, header: bytes, reason: str
) -> None:
    # EPS would go to Ghostscript where it is installed: its plugin must never see the bytes.
    for plugin in (
        DdsImagePlugin.DdsImageFile,
        EpsImagePlugin.EpsImageFile,
        PsdImagePlugin.PsdImageFile,
    ):
        monkeypatch.setattr(plugin, "_open", lambda self: pytest.fail("a refused format was read"))
    path = tmp_path / "upload.jpg"
    path.write_bytes(header)
    with pytest.raises(InputError) as refused:
        load_image(path, 32)
    assert str(refused.value) == f"{path}: cannot read image ({reason})"
