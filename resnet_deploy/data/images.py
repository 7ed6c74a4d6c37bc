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
# The Pillow formats of those extensions: what users send photos in (JPEG also opens a camera's
# multi-picture MPO). Every other plugin stays unreachable, so hostile bytes meet only these
# decoders: never EPS (which Pillow hands to Ghostscript where installed), DDS, PSD, ICNS, ...
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
ACCEPTED_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF or PPM"
# Pillow's modes for 16-bit greyscale (PNG and TIFF); "I" is how older Pillows open them.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# An image's own limit, read from its header before it is decoded: 50 megapixels is the full
# resolution of today's largest phone sensors (8160x6120 = 49.9 MP), 150 MB once decoded to
# RGB and 0.4-1.5 s to decode here. The model sees 256 pixels on the short side; larger
# images are refused, not decoded. Pillow's decompression-bomb check stays on behind it.
MAX_IMAGE_PIXELS = 50_000_000
# What one request may decode in all (see DecodeBudget): 21 photos of a 12 MP phone, or five
# at the limit above: 3-8 s of decoding on one core here, where 32 rows at the limit would
# take up to 50 s.
REQUEST_DECODE_PIXELS = 256_000_000
# Rows of a 16-bit image converted at a time, so that no temporary holds the whole image.
SIXTEEN_BIT_BAND_PIXELS = 1 << 18
# The resize before the crop keeps the aspect ratio, so a 20000x1 image of 144 bytes would grow
# to 256 x 5,120,000 pixels (5.7 GB). The resized image gets the bound Pillow puts on decoded
# images (its decompression-bomb limit).
MAX_RESIZED_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class DecodeBudget:
    """The pixels a group of images (one request) may still decode.

    Each image is charged from its header before it is decoded, so an image the budget cannot
    pay for costs nothing; later, smaller images may still fit.
    """

    def __init__(self, pixels: int = REQUEST_DECODE_PIXELS) -> None:
        self.total = pixels
        self.left = pixels

    def spend(self, width: int, height: int, label: object) -> None:
        pixels = width * height
        if pixels > self.left:
            raise InputError(
                f"{label}: a {width}x{height} image is over what is left of the request's decode "
                f"budget ({megapixels(self.left)} of {megapixels(self.total)} megapixels); send "
                "fewer or smaller images a request"
            )
        self.left -= pixels


def megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.1f}"


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


def open_rgb(
    path: Path | IO[bytes], name: str | None = None, *, budget: DecodeBudget | None = None
) -> Image.Image:
    """Decode ``path`` (or an open binary file, named ``name`` in errors) fully, upright (EXIF
    orientation applied), as 8-bit RGB; every failure is one InputError naming it.

    Only ``ACCEPTED_FORMATS`` are opened. The size in the header is checked against
    ``MAX_IMAGE_PIXELS`` and charged to ``budget`` before any pixel is decoded. Pillow's
    plugins raise any exception type on hostile bytes (NotImplementedError from DDS, TypeError
    from TIFF, struct.error, ZeroDivisionError, ...), so anything raised while decoding is the
    image's fault: this is the one place that says so, for predict, verify and serve alike.
    """
    label = name or path
    if isinstance(path, (str, Path)):
        check_input_file(path, "image file")  # a FIFO would block Pillow's reader forever
    try:
        with Image.open(path, formats=ACCEPTED_FORMATS) as image:
            check_size(image.size, label, budget)
            image.load()  # decode now, so a truncated file fails here, naming itself
            ImageOps.exif_transpose(image, in_place=True)
            rgb = to_rgb(image)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{label}: cannot read image ({unaccepted(path)})") from None
    except (Image.DecompressionBombError, PermissionError) as exc:
        raise InputError(f"{label}: cannot read image ({exc})") from None
    except Exception as exc:  # any type: see the docstring
        reason = str(exc) or type(exc).__name__
        raise InputError(f"{label}: broken or truncated image ({reason})") from None
    return rgb


def check_size(size: tuple[int, int], label: object, budget: DecodeBudget | None) -> None:
    """Refuse an image over ``MAX_IMAGE_PIXELS`` or over ``budget`` from its header's size."""
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"{label}: a {width}x{height} image ({megapixels(width * height)} megapixels) is over "
            f"the limit of {megapixels(MAX_IMAGE_PIXELS)} megapixels an image; scale it down"
        )
    if budget is not None:
        budget.spend(width, height, label)


def unaccepted(source: Path | IO[bytes]) -> str:
    """Why Pillow, limited to ``ACCEPTED_FORMATS``, found no image: the format the first bytes
    say, when another plugin of Pillow's knows them, or that they are no image at all."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as file:
            prefix = file.read(16)
    else:
        source.seek(0)
        prefix = source.read(16)
    found = sniff_format(prefix)
    if found in ACCEPTED_FORMATS:
        return f"a broken {found} header"
    if found:
        return f"{found} files are not accepted, only {ACCEPTED_NAMES}"
    return f"not a {ACCEPTED_NAMES} file"


def sniff_format(prefix: bytes) -> str | None:
    """The first Pillow format (accepted ones first) whose signature check takes ``prefix``."""
    Image.init()
    for name in (*ACCEPTED_FORMATS, *Image.ID):
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(prefix):
                return name
        except Exception:  # a signature check on too short a prefix: not this format
            continue
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """Greyscale, palette, CMYK, RGBA and 16-bit images as 8-bit RGB.

    Alpha is dropped, as torchvision's loader (``Image.convert("RGB")``) drops it, so inputs
    match what the model saw in training. 16-bit greyscale is scaled to 8 bits; Pillow's own
    conversion would clip every value above 255 to white.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        image = sixteen_to_eight_bits(image)
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError:
        raise ValueError(f"images of mode {image.mode} cannot be converted to RGB") from None


def sixteen_to_eight_bits(image: Image.Image) -> Image.Image:
    """16-bit greyscale as 8-bit (mode L): round(value / 257), clipped to 0-255.

    In integers and a band of rows at a time: float64 temporaries of the whole image cost
    29 bytes a pixel (4 GB for a 12000x12000 PNG); this costs the 8-bit result and a band.
    ``(v + 128) // 257`` is ``rint(v / 257)`` for every v in 0-65535 (no v / 257 ends in .5).
    """
    width, height = image.size
    out = np.empty((height, width), np.uint8)
    step = max(1, SIXTEEN_BIT_BAND_PIXELS // max(1, width))
    for top in range(0, height, step):
        bottom = min(top + step, height)
        band = np.asarray(image.crop((0, top, width, bottom)))
        wide = np.clip(band, 0, 65535).astype(np.uint32)  # mode I may hold any int32
        wide += 128
        wide //= 257
        out[top:bottom] = wide
    return Image.fromarray(out)


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
