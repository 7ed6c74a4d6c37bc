from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from resnet_deploy.errors import CheckpointError
from resnet_deploy.model.resnet import build_model
from tests.helpers import images


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A ResNet18 state dict in torchvision's names, and its logits on a fixed batch."""
    model = build_model("resnet18", seed=11).model
    with torch.inference_mode():
        logits = model(images(2))
    return model.state_dict(), logits


def logits_of(path: Path, variant: str = "torchvision") -> torch.Tensor:
    with torch.inference_mode():
        return build_model("resnet18", variant, path).model(images(2))


def test_torchvision_names_load(reference, save_state_dict) -> None:
    state, logits = reference
    path = save_state_dict(state)
    built = build_model("resnet18", "torchvision", path)
    assert built.weights.notes == ()
    assert built.weights.sha256 and len(built.weights.sha256) == 64
    assert torch.equal(logits_of(path), logits)


def test_tutorial_names_load_into_the_same_model(reference, save_state_dict) -> None:
    state, logits = reference
    tutorial_names = {k.replace("layer", "stage", 1): v for k, v in state.items()}
    assert "stage1.0.conv1.weight" in tutorial_names
    path = save_state_dict(tutorial_names)
    built = build_model("resnet18", "torchvision", path)
    assert "mapped the tutorial's stageN.* names to layerN.*" in built.weights.notes
    assert torch.equal(logits_of(path), logits)


def test_wrappers_and_prefixes_are_unwrapped_and_reported(reference, save_state_dict) -> None:
    state, logits = reference
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    path = save_state_dict(wrapped)
    notes = build_model("resnet18", "torchvision", path).weights.notes
    assert notes == ("unwrapped {'state_dict': ...}", "stripped the 'module.' prefix")
    assert torch.equal(logits_of(path), logits)


def test_checkpoints_without_batch_counters_load(reference, save_state_dict) -> None:
    state, logits = reference
    path = save_state_dict({k: v for k, v in state.items() if "num_batches_tracked" not in k})
    assert torch.equal(logits_of(path), logits)


def test_safetensors_load(reference, tmp_path: Path) -> None:
    state, logits = reference
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    assert torch.equal(logits_of(path), logits)


def test_gpu_saved_checkpoint_loads_on_cpu(reference, save_state_dict) -> None:
    """Rewrite the storage location recorded in the pickle, as a CUDA-saved file has it."""
    state, logits = reference
    path = save_state_dict(state)
    with zipfile.ZipFile(path) as src:
        entries = {info.filename: src.read(info) for info in src.infolist()}
    pickle_name = next(name for name in entries if name.endswith("data.pkl"))
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    assert cpu in entries[pickle_name]
    entries[pickle_name] = entries[pickle_name].replace(cpu, cuda)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for name, data in entries.items():
            dst.writestr(name, data)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)  # what a loader without map_location hits
    assert torch.equal(logits_of(path), logits)


def test_missing_key_is_refused_by_name(reference, save_state_dict) -> None:
    state, _ = reference
    path = save_state_dict({k: v for k, v in state.items() if k != "layer3.1.bn2.weight"})
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): layer3\.1\.bn2\.weight"):
        build_model("resnet18", "torchvision", path)


def test_unexpected_key_is_refused_by_name(reference, save_state_dict) -> None:
    state, _ = reference
    path = save_state_dict({**state, "head.extra.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): head\.extra\.weight"):
        build_model("resnet18", "torchvision", path)


def test_wrong_shape_is_refused_by_name(reference, save_state_dict) -> None:
    state, _ = reference
    path = save_state_dict({**state, "fc.weight": torch.zeros(10, 512)})
    with pytest.raises(CheckpointError, match=r"wrong shapes \(1\): fc\.weight \(10, 512\)"):
        build_model("resnet18", "torchvision", path)


def test_checkpoint_of_another_depth_is_refused(reference, save_state_dict) -> None:
    state, _ = reference
    with pytest.raises(CheckpointError, match="missing keys"):
        build_model("resnet34", "torchvision", save_state_dict(state))


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_pickle_carrying_code_is_refused_naming_the_global(save_state_dict, capfd) -> None:
    path = save_state_dict({"fc.weight": torch.zeros(1), "payload": RunsCode()})
    with pytest.raises(CheckpointError, match=r"tries to import posix\.system"):
        build_model("resnet18", "torchvision", path)
    assert "this must never run" not in capfd.readouterr().out


def test_truncated_checkpoint_is_refused(reference, save_state_dict) -> None:
    state, _ = reference
    path = save_state_dict(state)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"truncated \(1000 bytes\)"):
        build_model("resnet18", "torchvision", path)


def test_a_whole_pickled_model_is_not_a_state_dict(save_state_dict) -> None:
    path = save_state_dict([torch.zeros(1)])
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        build_model("resnet18", "torchvision", path)
