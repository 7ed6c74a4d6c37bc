"""Files users download: each bad one is refused with a message naming the file and cause."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from resnet_deploy.errors import CheckpointError, InputError
from resnet_deploy.model.onnxfile import load_onnx
from resnet_deploy.model.resnet import build_model
from resnet_deploy.runtime.providers import SessionConfig, create_session

# --- checkpoints -------------------------------------------------------------------------


def test_zero_byte_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "empty.pth"
    path.touch()
    with pytest.raises(CheckpointError, match=r"empty.pth: empty file \(0 bytes\)"):
        build_model("resnet18", weights=path)


def test_html_page_behind_a_pth_name(tmp_path: Path) -> None:
    path = tmp_path / "resnet50.pth"
    path.write_text("<!DOCTYPE html>\n<html><body>Sign in to continue</body></html>")
    with pytest.raises(CheckpointError, match="an HTML page, not a checkpoint"):
        build_model("resnet18", weights=path)


def test_onnx_file_behind_a_pth_name(tmp_path: Path) -> None:
    path = tmp_path / "model.pth"
    onnx.save(tiny_model(), path)
    with pytest.raises(CheckpointError, match="an ONNX model, not a PyTorch checkpoint"):
        build_model("resnet18", weights=path)


def test_checkpoint_needing_a_global_outside_the_allowlist(save_state_dict) -> None:
    path = save_state_dict({"fc.weight": torch.zeros(1), "args": argparse.Namespace(lr=0.1)})
    with pytest.raises(CheckpointError, match=r"tries to import argparse\.Namespace"):
        build_model("resnet18", weights=path)


def test_safetensors_content_behind_a_pth_name_loads(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = build_model("resnet18", seed=4).model.state_dict()
    path = tmp_path / "weights.pth"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    assert build_model("resnet18", weights=path).weights.sha256


def test_truncated_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"fc.weight": torch.zeros(1000, 512)}, str(path))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"truncated \(100 bytes\)"):
        build_model("resnet18", weights=path)


# --- ONNX files --------------------------------------------------------------------------


def tiny_model(ir_version: int = 10, opset: int = 18, weight_name: str = "w") -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.arange(1024, dtype=np.float32), weight_name)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", weight_name], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    return model


def with_external_location(tmp_path: Path, location: str) -> Path:
    """A model whose weight lives in external data at ``location`` (whatever that is)."""
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(tiny_model(), path, save_as_external_data=True, location="w.data", size_threshold=0)
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(model, path)
    return path


def test_external_data_inside_the_folder_loads(tmp_path: Path) -> None:
    path = with_external_location(tmp_path, "w.data")
    model = load_onnx(path)
    assert numpy_helper.to_array(model.graph.initializer[0])[5] == 5
    create_session(path, SessionConfig())


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("/etc/passwd", "an absolute path"),
        ("../secret.bin", r"climbs out of the model's folder \('..'\)"),
        ("sub/../../secret.bin", r"climbs out"),
        ("missing.data", "file missing"),
    ],
)
def test_external_data_escaping_or_missing_is_refused(
    tmp_path: Path, location: str, message: str
) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 8192)
    path = with_external_location(tmp_path, location)
    with pytest.raises(InputError, match=message):
        load_onnx(path)
    with pytest.raises(InputError, match=message):  # refused before ONNX Runtime sees it
        create_session(path, SessionConfig())


def test_external_data_through_a_symlink_out_of_the_folder(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(b"\0" * 8192)
    path = with_external_location(tmp_path, "link.data")
    (path.parent / "link.data").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(InputError, match="resolves outside the model's folder"):
        load_onnx(path)


def test_external_data_shorter_than_the_tensor(tmp_path: Path) -> None:
    path = with_external_location(tmp_path, "w.data")
    data = path.parent / "w.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(InputError, match="holds 100 bytes, the tensor needs 4096"):
        load_onnx(path)


def test_truncated_onnx_file(exported, tmp_path: Path) -> None:
    path = tmp_path / "cut.onnx"
    path.write_bytes(exported("resnet18").output.read_bytes()[:5000])
    with pytest.raises(
        InputError, match=r"cut.onnx: truncated or not an ONNX model \(5000 bytes\)"
    ):
        load_onnx(path)


def test_not_an_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("just some text, not a model\n")
    with pytest.raises(InputError, match=r"notes.onnx: (truncated or )?not an ONNX model"):
        load_onnx(path)


def test_ir_version_newer_than_the_runtime(tmp_path: Path) -> None:
    path = tmp_path / "future.onnx"
    onnx.save(tiny_model(ir_version=99), path)
    with pytest.raises(InputError, match=r"IR version 99 is newer than onnxruntime [\d.]+ reads"):
        create_session(path, SessionConfig())


def test_opset_newer_than_the_runtime(tmp_path: Path) -> None:
    path = tmp_path / "future.onnx"
    onnx.save(tiny_model(opset=99), path)
    with pytest.raises(InputError, match=r"opset 99 is newer than onnxruntime [\d.]+ supports"):
        create_session(path, SessionConfig())


def test_a_graph_onnx_runtime_cannot_build_is_one_clean_error(tmp_path: Path) -> None:
    model = tiny_model()
    model.graph.node[0].op_type = "NoSuchOp"
    path = tmp_path / "odd.onnx"
    onnx.save(model, path)
    with pytest.raises(InputError, match=r"odd.onnx: ONNX Runtime cannot load it: .*NoSuchOp"):
        create_session(path, SessionConfig())
