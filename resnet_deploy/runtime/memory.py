"""Will a batch fit? An estimate made before allocating, so a huge batch or image size is a
one-line refusal instead of a process the kernel kills.

A ResNet's activations scale with batch x height x width. Inference keeps only a few alive at a
time: measured on this project's CPU, PyTorch eager fp32 ResNet50 at batch 32 (224x224) peaked at
451 MiB over its weights (4.6x its largest activation per image, conv1's 64x112x112 output),
float64 at 977 MiB and ONNX Runtime at 134 MiB. ``--localize`` keeps every layer's output on both
sides, so it needs the sum of all activations instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import psutil

from resnet_deploy.errors import InputError

# conv1's output, the largest activation of every depth (64 x 112 x 112 at 224x224)
LARGEST_ACTIVATION_224 = 64 * 112 * 112
# Every leaf module's output for one 224x224 image, counted with meta tensors (see the test)
ALL_ACTIVATIONS_224 = {
    "resnet18": 7_477_736,
    "resnet34": 11_240_936,
    "resnet50": 32_040_424,
    "resnet101": 47_394_280,
    "resnet152": 66_360_808,
}
PEAK_FACTOR = 5  # live activations at the peak, in units of the largest one (measured 4.6)


def activation_bytes(
    arch: str, batch: int, image_size: int, *, itemsize: int = 4, every_layer: bool = False
) -> int:
    """Peak bytes of one forward pass; ``every_layer`` when each layer's output is kept."""
    scale = batch * (image_size / 224) ** 2
    per_image = ALL_ACTIVATIONS_224[arch] if every_layer else PEAK_FACTOR * LARGEST_ACTIVATION_224
    return int(per_image * scale * itemsize)


def input_bytes(batch: int, image_size: int, itemsize: int = 4) -> int:
    return batch * 3 * image_size * image_size * itemsize


def available_bytes() -> int:
    """What this process may still allocate: free memory, or what is left of its address-space
    limit if that is lower (the project runs experiments under ``prlimit --as``)."""
    available = psutil.virtual_memory().available
    limit = _address_space_limit()
    if limit is not None:
        available = min(available, limit - psutil.Process().memory_info().vms)
    return max(available, 0)


def check_fits(
    needed: int,
    what: str,
    advice: str = "use a smaller batch size or image size",
    options: Sequence[str] = (),
) -> None:
    """Refuse work whose estimate exceeds what is available, naming both figures (and the
    ``options`` that set its size)."""
    available = available_bytes()
    if needed > available:
        raise InputError(
            f"{what} needs about {_gib(needed)} of memory, more than the {_gib(available)} "
            f"available here; {advice}",
            options=options,
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _address_space_limit() -> int | None:
    """RLIMIT_AS in bytes; None where unlimited or where there is no such limit (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if limit == resource.RLIM_INFINITY else limit
