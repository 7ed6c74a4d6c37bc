from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import resnet_deploy.convert.export as export_module
from resnet_deploy.convert.export import EXPORTERS, ExportOptions, export_model, opset_range
from resnet_deploy.errors import InputError, OutputError
from resnet_deploy.model.metadata import read_metadata
from resnet_deploy.model.resnet import build_model
from tests.helpers import ATOL, RTOL, cli, images


def run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


@pytest.mark.parametrize("arch", ["resnet50", "resnet18"])
@pytest.mark.parametrize("variant", ["torchvision", "seed"])
def test_onnx_matches_eager_at_two_batch_sizes(exported, arch: str, variant: str) -> None:
    result = exported(arch, variant)
    eager = build_model(arch, variant).model
    for batch in (1, 3):  # both from the same dynamic-batch file
        x = images(batch, seed=batch)
        with torch.inference_mode():
            expected = eager(x).numpy()
        actual = run_onnx(result.output, x)
        assert actual.shape == (batch, 1000)
        np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def test_simplified_resnet50_holds_only_the_expected_ops(exported) -> None:
    result = exported("resnet50", "torchvision")
    assert set(result.ops_final) <= {"Conv", "Relu", "Add", "MaxPool", "ReduceMean"} | {
        "GlobalAveragePool",
        "Reshape",
        "Flatten",
        "Gemm",
    }
    assert result.ops_final["Conv"] == 53  # 49 convs + 4 downsample convs, BatchNorm folded
    proto = onnx.load(str(result.output))
    assert not {"BatchNormalization", "Identity", "Shape", "Gather"} & {
        n.op_type for n in proto.graph.node
    }


def test_the_file_is_self_contained_and_describes_itself(exported) -> None:
    result = exported("resnet18", "seed")
    assert [p.name for p in result.output.parent.iterdir()] == ["model.onnx"]
    proto = onnx.load(str(result.output))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    onnx.checker.check_model(proto, full_check=True)
    meta = read_metadata(proto)
    assert meta == result.metadata
    assert (meta.arch, meta.variant, meta.seed, meta.batch) == ("resnet18", "seed", 0, "dynamic")
    assert (meta.layout, meta.dtype, meta.color, meta.opset) == ("NCHW", "float32", "RGB", 18)
    assert meta.mean == (0.485, 0.456, 0.406)
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value


def test_fixed_batch_and_other_image_size(exported) -> None:
    result = exported("resnet18", "torchvision", batch=2, image_size=160)
    proto = onnx.load(str(result.output))
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 160, 160]
    x = images(2, size=160)
    with torch.inference_mode():
        expected = build_model("resnet18").model(x).numpy()
    np.testing.assert_allclose(run_onnx(result.output, x), expected, rtol=RTOL, atol=ATOL)


def test_torchscript_exporter(exported) -> None:
    result = exported("resnet18", "seed", exporter="torchscript", opset=17)
    assert "Identity" not in result.ops_final
    x = images(2)
    with torch.inference_mode():
        expected = build_model("resnet18", "seed").model(x).numpy()
    np.testing.assert_allclose(run_onnx(result.output, x), expected, rtol=RTOL, atol=ATOL)


def test_weights_file_is_recorded_with_its_hash(tmp_path: Path, save_state_dict) -> None:
    weights = save_state_dict(build_model("resnet18", seed=5).model.state_dict())
    result = export_model(
        ExportOptions(output=tmp_path / "m.onnx", arch="resnet18", weights=str(weights))
    )
    assert result.metadata.weights == str(weights.resolve())
    assert result.metadata.weights_sha256 == build_model("resnet18", weights=weights).weights.sha256
    assert result.metadata.seed is None


def test_existing_output_is_refused_before_any_work(tmp_path: Path, monkeypatch) -> None:
    output = tmp_path / "model.onnx"
    output.write_bytes(b"the user's file")
    monkeypatch.setattr(export_module, "build_model", lambda *a: pytest.fail("work started"))
    with pytest.raises(InputError, match=r"already exists.*--force"):
        export_model(ExportOptions(output=output, arch="resnet18"))
    assert output.read_bytes() == b"the user's file"


@pytest.mark.parametrize(
    ("failure", "raised"),
    [
        (KeyboardInterrupt(), KeyboardInterrupt),
        (OSError(28, "No space left on device"), OutputError),
    ],
)
def test_failure_while_writing_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch, failure: BaseException, raised: type
) -> None:
    output = tmp_path / "model.onnx"
    output.write_bytes(b"the user's file")

    def failing_save(proto, path):
        Path(path).write_bytes(b"half a model")
        raise failure

    monkeypatch.setattr(export_module.onnx, "save", failing_save)
    with pytest.raises(raised):
        export_model(ExportOptions(output=output, arch="resnet18", force=True))
    assert output.read_bytes() == b"the user's file"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_interrupted_export_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "simplify", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(ExportOptions(output=tmp_path / "m.onnx", arch="resnet18"))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "message", "named"),
    [
        ({"variant": "seed", "image_size": 256}, "only takes 224x224", ("variant", "image_size")),
        (
            {"opset": 17},
            "dynamo exporter installed here writes opsets 18 to",
            ("exporter", "opset"),
        ),
        ({"batch": 0}, "batch size must be at least 1", ("batch",)),
        ({"weights": "nowhere.pth"}, "nowhere.pth: weights file not found", ()),
        ({"output": Path("no/such/folder/m.onnx")}, "output folder no/such/folder does not", ()),
    ],
)
def test_bad_options_fail_fast(options: dict, message: str, named: tuple) -> None:
    with pytest.raises(InputError, match=message) as raised:
        export_model(ExportOptions(**{"arch": "resnet18", **options}))
    assert raised.value.options == named


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_an_opset_the_installed_exporter_cannot_write_is_refused_before_any_work(
    exporter: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The range comes from the installed torch and onnx; outside it, one line, no model built."""
    oldest, newest = opset_range(exporter)

    def built(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was built for an opset the exporter cannot write")

    monkeypatch.setattr(export_module, "build_model", built)
    for opset in (oldest - 1, newest + 1, 1000):
        result = cli(
            "export",
            "--arch",
            "resnet18",
            "--exporter",
            exporter,
            "--opset",
            opset,
            "-o",
            tmp_path / "m.onnx",
        )
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and "Traceback" not in result.output
        assert f"writes opsets {oldest} to {newest}, got opset {opset}" in result.output
    assert list(tmp_path.iterdir()) == []


def test_onnxruntime_sees_the_declared_io(exported) -> None:
    session = ort.InferenceSession(
        str(exported("resnet18", "torchvision").output), providers=["CPUExecutionProvider"]
    )
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("input", "tensor(float)", [3, 224, 224])
    assert (out.name, out.shape[1:]) == ("logits", [1000])


def test_dynamic_size_takes_any_image_size(exported) -> None:
    result = exported("resnet18", "torchvision", dynamic_size=True)
    proto = onnx.load(str(result.output))
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    assert set(result.ops_final) == {"Conv", "Relu", "Add", "MaxPool", "ReduceMean"} | {
        "Reshape",
        "Gemm",
    }
    eager = build_model("resnet18").model
    for size in (224, 97):
        x = images(2, size=size)
        with torch.inference_mode():
            expected = eager(x).numpy()
        np.testing.assert_allclose(run_onnx(result.output, x), expected, rtol=RTOL, atol=ATOL)


def test_the_seed_variant_cannot_have_a_dynamic_size() -> None:
    with pytest.raises(InputError, match="cannot have a dynamic size") as raised:
        export_model(ExportOptions(arch="resnet18", variant="seed", dynamic_size=True))
    assert raised.value.options == ("variant", "dynamic_size")
