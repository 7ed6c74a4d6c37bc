"""Image files to model inputs, exactly as the ImageNet recipe the model was trained with.

The recipe is torchvision's evaluation transform on a PIL image: open and convert to RGB
(``default_loader``), ``Resize(round(size * 256 / 224))`` with bilinear interpolation on the
short side, ``CenterCrop(size)``, ``ToTensor`` (scale to [0, 1]) and ``Normalize(mean, std)``.
Reproducing it bit for bit matters: a verification or an accuracy number computed on inputs
preprocessed differently measures the preprocessing, not the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from resnet_deploy.errors import InputError
from resnet_deploy.files import check_input_file
from resnet_deploy.model.metadata import IMAGENET_MEAN, IMAGENET_RESIZE_RATIO, IMAGENET_STD

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
# Pillow's modes for 16-bit greyscale (PNG and TIFF); "I" is how older Pillows open them.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# The resize before the crop keeps the aspect ratio, so a 20000x1 image of 144 bytes would grow
# to 256 x 5,120,000 pixels (5.7 GB). The resized image gets the bound Pillow puts on decoded
# images (its decompression-bomb limit).
MAX_RESIZED_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def list_images(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursively, so class subfolders work), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of images")
    found = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not found:
        raise InputError(
            f"{folder}: no image files ({', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS)})"
        )
    return found


def open_rgb(path: Path | IO[bytes], name: str | None = None) -> Image.Image:
    """Decode ``path`` (or an open binary file, named ``name`` in errors) fully, upright (EXIF
    orientation applied), as 8-bit RGB.

    Pillow's decompression-bomb limit stays on: an image too large to be a photograph is an
    error, not a reason to allocate gigabytes.
    """
    label = name or path
    if isinstance(path, (str, Path)):
        check_input_file(path, "image file")  # a FIFO would block Pillow's reader forever
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here, naming itself
            upright = ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, PermissionError) as exc:
        raise InputError(f"{label}: cannot read image ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InputError(f"{label}: broken or truncated image ({exc})") from None
    try:
        return to_rgb(upright)
    except ValueError as exc:
        raise InputError(f"{label}: {exc}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Greyscale, palette, CMYK, RGBA and 16-bit images as 8-bit RGB.

    Alpha is dropped, as torchvision's loader (``Image.convert("RGB")``) drops it, so inputs
    match what the model saw in training. 16-bit greyscale is scaled to 8 bits; Pillow's own
    conversion would clip every value above 255 to white.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.float64) / 257.0  # 65535 -> 255
        image = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8))  # mode L
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError:
        raise ValueError(f"images of mode {image.mode} cannot be converted to RGB") from None


def resize_size(image_size: int) -> int:
    """The short side before the center crop: 256 for 224, as in the ImageNet recipe."""
    return round(image_size * IMAGENET_RESIZE_RATIO)


def preprocess(
    image: Image.Image,
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """One RGB image as a normalised float32 CHW array of ``image_size`` x ``image_size``."""
    width, height = image.size
    short, long = sorted((width, height))
    new_short = resize_size(image_size)
    new_long = int(new_short * long / short)  # torchvision truncates the long side
    size = (new_short, new_long) if width <= height else (new_long, new_short)
    if size[0] * size[1] > MAX_RESIZED_PIXELS:
        raise InputError(
            f"a {width}x{height} image would be resized to {size[0]}x{size[1]} pixels for a "
            f"{image_size}x{image_size} crop, over the limit of {MAX_RESIZED_PIXELS}: its aspect "
            "ratio is too extreme for the ImageNet recipe"
        )
    resized = image.resize(size, Image.Resampling.BILINEAR)
    left = round((size[0] - image_size) / 2.0)
    top = round((size[1] - image_size) / 2.0)
    cropped = resized.crop((left, top, left + image_size, top + image_size))
    pixels = np.asarray(cropped, dtype=np.float32) / 255.0
    normalised = (pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def load_image(
    path: Path,
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """The file at ``path`` as the model's input for one image: float32, shape (3, size, size)."""
    image = open_rgb(Path(path))
    try:
        return preprocess(image, image_size, mean, std)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def load_batch(
    paths: Sequence[Path],
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """Several files as one NCHW float32 batch."""
    return np.stack([load_image(p, image_size, mean, std) for p in paths])
