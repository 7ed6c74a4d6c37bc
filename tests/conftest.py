"""Shared fixtures and hooks: exports are slow (seconds each), so each one is made once per
session. Constants and plain helpers are in helpers.py (this module is pytest's, not imported)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from resnet_deploy.convert.export import ExportOptions, ExportResult, export_model
from resnet_deploy.environment import gpus


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


@pytest.fixture(scope="session")
def r18(exported: Callable[..., ExportResult]) -> Path:
    """The torchvision ResNet18 (random weights, seed 0) at 224x224 with a dynamic batch: the
    model most tests run, exported once."""
    return exported("resnet18").output


@pytest.fixture
def save_state_dict(tmp_path: Path) -> Callable[..., Path]:
    def save(state: object, name: str = "weights.pth") -> Path:
        path = tmp_path / name
        torch.save(state, path)
        return path

    return save
