"""Shared fixtures: exports are slow (seconds each), so each one is made once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from resnet_deploy.convert.export import ExportOptions, ExportResult, export_model
from resnet_deploy.environment import gpus

# Measured on this project's reference CPU: ONNX Runtime against eager PyTorch, random weights
# (logits of std ~1, |max| ~5), ResNet50 both variants, batches 1-8: max |diff| <= 8e-5. These
# bounds leave a 6x margin; a wrong op (one ReLU, a mis-folded BatchNorm) errs by 1e-2 or more.
ATOL = 5e-4
RTOL = 1e-3


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests need an NVIDIA GPU; ``no_gpu`` tests check the error CUDA gives without one."""
    marked = [i for i in items if {"gpu", "no_gpu"} & set(i.keywords)]
    if not marked:
        return
    has_gpu = bool(gpus())
    for item in marked:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU"))
        if "no_gpu" in item.keywords and has_gpu:
            item.add_marker(pytest.mark.skip(reason="checks the error CUDA gives without a GPU"))


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., ExportResult]:
    """``exported(arch, variant, **options)``: an ExportResult, made on first use."""
    cache: dict[tuple, ExportResult] = {}

    def make(arch: str = "resnet18", variant: str = "torchvision", **options) -> ExportResult:
        key = (arch, variant, *sorted(options.items()))
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"{arch}-{variant}")
            cache[key] = export_model(
                ExportOptions(output=folder / "model.onnx", arch=arch, variant=variant, **options)
            )
        return cache[key]

    return make


def images(batch: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def save_state_dict(tmp_path: Path) -> Callable[..., Path]:
    def save(state: object, name: str = "weights.pth") -> Path:
        path = tmp_path / name
        torch.save(state, path)
        return path

    return save
