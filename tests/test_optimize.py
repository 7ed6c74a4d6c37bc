from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from PIL import Image

from resnet_deploy.cli import main
from resnet_deploy.convert.quantize import OptimizeOptions, format_result, optimize_model
from resnet_deploy.environment import gpus
from resnet_deploy.errors import InputError, NumericsError
from resnet_deploy.model.metadata import read_metadata
from resnet_deploy.perf.bench import BenchOptions, bench


@pytest.fixture(scope="module")
def source(exported, tmp_path_factory) -> Path:
    """A private copy: optimize writes beside its input."""
    path = tmp_path_factory.mktemp("optimize") / "resnet18.onnx"
    path.write_bytes(exported("resnet18", "torchvision").output.read_bytes())
    return path


def run_model(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_int8_is_quantized_guarded_and_labelled(source: Path) -> None:
    result = optimize_model(source, OptimizeOptions(precision="int8", samples=8, guard_samples=8))
    assert result.output == source.with_name("resnet18.int8.onnx")
    assert result.guard.passed
    assert result.ops["QuantizeLinear"] > 0 and result.ops["DequantizeLinear"] > 0
    proto = onnx.load(str(result.output))
    meta = read_metadata(proto)
    assert meta.precision == "int8"
    assert "minmax calibration on 8 random inputs" in meta.calibration
    assert meta.arch == "resnet18" and meta.seed == 0  # the source's record is kept
    # Per-channel int8 weights: one scale per output channel of every quantized conv.
    scales = [t for t in proto.graph.initializer if t.name.endswith("_scale") and len(t.dims) == 1]
    assert scales, "no per-channel weight scales"
    x = np.random.default_rng(5).standard_normal((2, 3, 224, 224), dtype=np.float32)
    assert run_model(result.output, x).shape == (2, 1000)
    # bench takes the file as it is, and labels the numbers with its precision.
    options = BenchOptions(batch_sizes=(2,), warmup_runs=1, iterations=3, baseline="none")
    timing = bench(result.output, options)
    assert timing.metadata.precision == "int8"
    assert timing.batches[0].error is None and timing.batches[0].runs == 3


def test_fp16_keeps_float32_io(source: Path) -> None:
    result = optimize_model(source, OptimizeOptions(precision="fp16", guard_samples=4))
    proto = onnx.load(str(result.output))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = {t.data_type for t in proto.graph.initializer if t.name.endswith("weight")}
    assert weights == {onnx.TensorProto.FLOAT16}
    assert read_metadata(proto).precision == "fp16"
    assert result.guard.passed
    if not gpus():  # CUDA cannot start, so the guard ran on the CPU, which computes in fp32
        assert result.guard.provider == "CPUExecutionProvider"
        assert result.guard_scope.startswith("weights only")
        assert "accuracy guard (weights only: " in format_result(result)


def test_guard_refuses_a_model_calibrated_on_constant_images(source: Path, tmp_path: Path) -> None:
    """Calibrating on one flat grey picture is a real mistake: every scale is wrong."""
    folder = tmp_path / "grey"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (256, 256), (128, 128, 128)).save(folder / f"{i}.png")
    output = tmp_path / "broken.onnx"
    options = OptimizeOptions(
        precision="int8", calibration=str(folder), output=output, guard_samples=8
    )
    with pytest.raises(NumericsError, match="accuracy guard failed, nothing written"):
        optimize_model(source, options)
    assert list(tmp_path.iterdir()) == [folder]


def test_excluded_modules_stay_float(source: Path, tmp_path: Path) -> None:
    output = tmp_path / "partial.onnx"
    options = OptimizeOptions(
        precision="int8", samples=4, exclude=("conv1", "fc"), output=output, guard=False
    )
    result = optimize_model(source, options)
    assert len(result.excluded_nodes) == 2
    proto = onnx.load(str(output))
    consumers = {n.name: n for n in proto.graph.node}
    for name in result.excluded_nodes:
        node = consumers[name]
        assert any(i.endswith(".weight") for i in node.input), f"{name} weight was quantized"


def test_unknown_exclusion_is_refused(source: Path, tmp_path: Path) -> None:
    options = OptimizeOptions(exclude=("layer9.conv",), output=tmp_path / "x.onnx")
    with pytest.raises(InputError, match=r"^layer9\.conv: no node or module") as raised:
        optimize_model(source, options)
    assert raised.value.options == ("exclude",)


def test_output_is_not_overwritten_without_force(source: Path, tmp_path: Path) -> None:
    output = tmp_path / "taken.onnx"
    output.write_text("keep")
    with pytest.raises(InputError, match="already exists"):
        optimize_model(source, OptimizeOptions(output=output))
    assert output.read_text() == "keep"


def test_cli_exit_1_and_no_file_when_the_guard_fails(source: Path, tmp_path: Path) -> None:
    folder = tmp_path / "grey"
    folder.mkdir()
    Image.new("RGB", (256, 256), (90, 90, 90)).save(folder / "flat.png")
    output = tmp_path / "broken.onnx"
    args = ["optimize", str(source), "--precision", "int8", "--calibration", str(folder)]
    args += ["-o", str(output), "--guard-samples", "4", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "accuracy guard failed, nothing written" in result.stderr
    record = json.loads(result.stdout)
    assert record["output"] is None and record["guard"]["passed"] is False
    assert not output.exists()
