"""profile: per-layer times named after PyTorch modules, the optimized graph checked."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnx import helper

from resnet_deploy.cli import main
from resnet_deploy.convert.quantize import OptimizeOptions, optimize_model
from resnet_deploy.perf.profile import ProfileOptions, profile_model
from resnet_deploy.perf.profile_graph import check_graph, layer_names

QUICK = {"runs": 2, "warmup_runs": 1}


@pytest.fixture(scope="module")
def int8_model(exported, tmp_path_factory) -> Path:
    source = exported("resnet18").output
    output = tmp_path_factory.mktemp("int8") / "resnet18.int8.onnx"
    optimize_model(source, OptimizeOptions(samples=4, guard=False, output=output))
    return output


def test_int8_layers_are_named_after_modules_and_checked(int8_model: Path, tmp_path: Path):
    kept = tmp_path / "ran.onnx"
    report = profile_model(int8_model, ProfileOptions(optimized_model=kept, **QUICK))
    layers = {layer.layer: layer for layer in report.layers}
    # every conv of ResNet18 (20 with the three downsample convs), each residual add by block
    convs = [name for name, layer in layers.items() if "QLinearConv" in layer.kernels]
    assert len(convs) == 20 and {"conv1", "layer4.1.conv2", "layer2.0.downsample.0"} <= set(convs)
    assert layers["layer1.0 add"].kernels == ["QLinearAdd"]
    assert layers["fc"].gop == pytest.approx(2 * 512 * 1000 / 1e9)
    # conv1: 64 x 4 x 7 x 7 weights (optimize pads the 3 input channels) over 112 x 112 outputs
    assert layers["conv1"].gop == pytest.approx(2 * 112 * 112 * 64 * 4 * 49 / 1e9)
    assert all(layer.gops_per_s > 0 for name, layer in layers.items() if name in convs)
    assert sum(layer.share for layer in report.layers) == pytest.approx(1.0)
    assert report.peak.kind == "u8 x s8 MatMulInteger" and report.peak.gops_per_s > 0
    # the graph ONNX Runtime ran: convs and adds quantized and kept on disk when asked
    assert report.graph.ops["QLinearConv"] == 20 and report.graph.ops["QLinearAdd"] == 8
    assert not report.graph.float_convs and not report.graph.float_adds
    # optimize's exact rewrites leave no float island (the stem's Pad pads the float input)
    assert report.graph.fused and not report.graph.float_islands
    assert layers["avgpool"].kernels == ["QLinearGlobalAveragePool"]
    assert onnx.load(str(kept)).graph.node
    assert report.contention.wall_s > 0


def test_openvino_counters_side_by_side(int8_model: Path):
    pytest.importorskip("openvino")
    report = profile_model(int8_model, ProfileOptions(compare="openvino", **QUICK))
    layers = {layer.layer: layer for layer in report.layers}
    assert report.openvino is not None and report.openvino.total_ms > 0
    assert layers["layer3.1.conv2"].openvino_ms > 0 and layers["layer3.1.conv2"].ms > 0


def test_float_conv_add_and_island_are_reported():
    """An int8 graph with a Conv, an Add and a float op between DequantizeLinear and
    QuantizeLinear left in float: each is named."""
    nodes = [
        helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xf"], name="dq"),
        helper.make_node("Conv", ["xf", "w"], ["c"], name="float_conv"),
        helper.make_node("Add", ["c", "xf"], ["a"], name="float_add"),
        helper.make_node("ReduceMean", ["xf"], ["m"], name="mean"),
        helper.make_node("QuantizeLinear", ["m", "s", "z"], ["q"], name="q"),
    ]
    graph = helper.make_graph(nodes, "g", [], [])
    check = check_graph(helper.make_model(graph), "int8")
    assert check.float_convs == ["float_conv"] and check.float_adds == ["float_add"]
    assert check.float_islands == ["mean (ReduceMean)"] and not check.fused


def test_fp32_graph_layer_names(exported):
    model = onnx.load(str(exported("resnet18").output))
    names = layer_names(model)
    assert "layer4.1.conv2" in names.values() and "layer4.1 add" in names.values()
    assert "maxpool" in names.values() and "fc" in names.values()


def test_cli_json_and_plot(int8_model: Path, tmp_path: Path):
    plot = tmp_path / "roof.png"
    args = ["profile", str(int8_model), "--runs", "2", "--warmup", "1", "--plot", str(plot)]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["precision"] == "int8" and record["batch_size"] == 1
    assert {"layer", "ms", "share", "gops_per_s", "peak_fraction"} <= set(record["layers"][0])
    assert "unreliable" in record["contention"]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    again = CliRunner().invoke(main, [*args])
    assert again.exit_code == 2 and "already exists" in again.output


def test_cli_bad_runs(int8_model: Path):
    result = CliRunner().invoke(main, ["profile", str(int8_model), "--runs", "0"])
    assert result.exit_code == 2 and "at least 1" in result.output
