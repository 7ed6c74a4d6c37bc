"""verify must pass a correct export and catch every tampered one, naming where it broke."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import helper, numpy_helper
from PIL import Image
from serving import count_model_reads  # tests/ is on sys.path under pytest's default import mode

from resnet_deploy.check.verify import VerifyOptions, session_config, verify
from resnet_deploy.cli import main
from resnet_deploy.errors import InputError
from resnet_deploy.model.metadata import read_metadata, write_metadata
from resnet_deploy.tolerance import Tolerance, compare_outputs
from tests.helpers import ATOL

FAST = {"samples": 1, "batch_sizes": (1,)}  # one image: enough to see a tampered model


def tampered(source: Path, folder: Path, change) -> Path:
    """A copy of ``source`` with ``change(proto)`` applied, metadata and all."""
    proto = onnx.load(str(source))
    change(proto)
    path = folder / "tampered.onnx"
    onnx.save(proto, str(path))
    return path


def run_cli(*args: str):
    return CliRunner().invoke(main, ["verify", *map(str, args)])


def test_correct_export_passes_at_every_batch_size_of_the_sweep(exported, monkeypatch) -> None:
    path = exported("resnet18").output
    reads = count_model_reads(monkeypatch)
    counts = []
    report = verify(
        path,
        VerifyOptions(samples=2, localize=True),
        progress=lambda step, done=None, total=None: counts.append((step, done, total)),
    )
    assert reads == [path]  # the sweep, the reference and the session share one read
    assert [c for c in counts if c[0] == "shapes"] == [("shapes", i, 3) for i in range(4)]
    assert report.passed
    assert [(s.batch_size, s.image_size) for s in report.shapes] == [(1, 224), (2, 224), (7, 224)]
    assert "fixed at 224x224" in report.shape_note
    for shape in report.shapes:
        assert shape.passed and not shape.failures
        assert 0 < shape.errors.max_abs_error < ATOL  # measured, and well inside tolerance
        assert 0 < shape.noise_floor_max_abs < ATOL
        assert shape.errors.top1_agreement == shape.errors.top5_agreement == 1.0
        assert shape.errors.min_cosine_similarity > 0.9999
    assert report.provider == "CPUExecutionProvider"
    assert report.torch_tf32 == {
        "torch.backends.cuda.matmul.fp32_precision": "ieee",
        "torch.backends.cudnn.conv.fp32_precision": "ieee",
    }
    found = report.localization
    assert found.mapping == "names" and found.first_divergence is None and not found.unmatched
    names = [layer.name for layer in found.layers]
    assert {"conv1", "maxpool", "layer2.0.downsample.0", "layer4.1", "logits"} <= set(names)
    assert names.index("layer1.0.conv1") < names.index("layer1.0") < names.index("layer4.1")


def test_cli_prints_a_table_and_writes_the_same_record(exported, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = run_cli(exported("resnet18").output, "--samples", "1", "--batch-sizes", "1,2")
    assert result.exit_code == 0, result.output
    assert "noise floor" in result.output and "PASS" in result.output
    result = run_cli(exported("resnet18").output, *("--samples", "1", "--json", out))
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["passed"] is True
    assert [s["batch_size"] for s in record["shapes"]] == [1, 2, 7]
    assert record["tolerance"]["atol"] == 5e-4


def test_a_slightly_perturbed_conv_is_caught_and_localized(exported, tmp_path: Path) -> None:
    def scale_one_channel(proto: onnx.ModelProto) -> None:
        (tensor,) = [t for t in proto.graph.initializer if t.name == "layer2.1.conv2.weight"]
        weight = numpy_helper.to_array(tensor).copy()
        weight[0] *= 1.05  # one output channel of 128, 5% larger
        tensor.CopyFrom(numpy_helper.from_array(weight, tensor.name))

    path = tampered(exported("resnet18").output, tmp_path, scale_one_channel)
    out = tmp_path / "report.json"
    result = run_cli(path, "--samples", "1", "--batch-sizes", "1", "--localize", "--json", out)
    assert result.exit_code == 1, result.output
    assert "first divergence at layer2.1.conv2 (conv" in result.output
    record = json.loads(out.read_text())
    assert record["passed"] is False
    assert record["localization"]["first_divergence"]["name"] == "layer2.1.conv2"
    curve = {layer["name"]: layer for layer in record["localization"]["layers"]}
    assert not curve["layer2.1.conv1"]["beyond_tolerance"]
    assert curve["layer2.1.conv2"]["rel_error"] > 100 * curve["layer2.1.conv1"]["rel_error"]


@pytest.mark.parametrize(
    ("relu_after", "replacement", "named"),
    [
        ("layer2.0.conv1", "LeakyRelu", "layer2.0.conv1 relu"),
        ("layer3.1.conv2", "Identity", "layer3.1"),  # the block's final ReLU, after its Add
    ],
)
def test_a_replaced_relu_is_caught_and_localized(
    exported, tmp_path: Path, relu_after: str, replacement: str, named: str
) -> None:
    def replace_relu(proto: onnx.ModelProto) -> None:
        graph = proto.graph
        conv = next(n for n in graph.node if n.input[1:2] == [f"{relu_after}.weight"])
        value = conv.output[0]
        if replacement == "Identity":  # follow the Add to the block's ReLU
            value = next(n for n in graph.node if value in n.input and n.op_type == "Add").output[0]
        relu = next(n for n in graph.node if value in n.input and n.op_type == "Relu")
        relu.op_type = replacement
        if replacement == "LeakyRelu":
            relu.attribute.append(helper.make_attribute("alpha", 0.01))

    path = tampered(exported("resnet18").output, tmp_path, replace_relu)
    report = verify(path, VerifyOptions(**FAST, localize=True))
    assert not report.passed
    assert report.shapes[0].errors.elements_beyond_tolerance > 0
    assert report.localization.first_divergence.name == named


def test_a_file_of_the_other_variant_is_caught(exported, tmp_path: Path) -> None:
    def claim_torchvision(proto: onnx.ModelProto) -> None:
        write_metadata(proto, replace(read_metadata(proto), variant="torchvision"))

    path = tampered(exported("resnet18", "seed").output, tmp_path, claim_torchvision)
    report = verify(path, VerifyOptions(**FAST, localize=True))
    assert not report.passed and report.variant == "torchvision"
    assert report.shapes[0].errors.min_cosine_similarity < 0.999
    # The seed graph's ReLU before the first residual Add is the first thing that differs.
    assert report.localization.first_divergence.name == "layer1.0"


def test_cuda_without_a_working_gpu_is_a_provider_error(exported) -> None:
    result = run_cli(exported("resnet18").output, "--provider", "cuda", *("--samples", "1"))
    if result.exit_code == 0:  # a machine where CUDA really works: it must have run there
        assert "CUDAExecutionProvider" in result.output and "use_tf32=0" in result.output
    else:
        assert result.exit_code == 2, result.output
        assert "could not start CUDAExecutionProvider and fell back" in result.output
        assert "Traceback" not in result.output


def test_nan_inputs_are_reported_not_crashed_on(exported, tmp_path: Path) -> None:
    inputs = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    inputs[1, 0, 5, 5] = np.nan
    path = tmp_path / "inputs.npy"
    np.save(path, inputs)
    report = verify(exported("resnet18").output, VerifyOptions(inputs=str(path), batch_sizes=(2,)))
    (shape,) = report.shapes
    assert not report.passed and shape.nonfinite_inputs == 1
    assert shape.errors.nonfinite_reference == shape.errors.nonfinite_actual == 1000
    assert shape.failures[0] == "1 non-finite values in the inputs"
    assert shape.errors.max_abs_error < ATOL  # the finite sample is still compared
    result = run_cli(exported("resnet18").output, "--inputs", path, "--batch-sizes", "1")
    assert result.exit_code == 1 and "non-finite" in result.output


def test_a_folder_of_images_is_cycled_into_batches(exported, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 256, (180, 240, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    options = VerifyOptions(inputs=str(tmp_path), batch_sizes=(2,))
    report = verify(exported("resnet18").output, options)
    assert report.passed and report.inputs.startswith("3 images")
    assert (report.shapes[0].batches, report.shapes[0].errors.samples) == (2, 4)


def test_a_fixed_batch_file_is_verified_at_its_batch(exported) -> None:
    path = exported("resnet18", "torchvision", batch=2, image_size=160).output
    report = verify(path, VerifyOptions(samples=2))
    assert report.passed and [(s.batch_size, s.image_size) for s in report.shapes] == [(2, 160)]
    assert "batch fixed at 2" in report.shape_note
    with pytest.raises(InputError, match="fixed at 2; it cannot run batch sizes 1,2"):
        verify(path, VerifyOptions(batch_sizes=(1, 2)))
    with pytest.raises(InputError, match="fixed at 160x160"):
        verify(path, VerifyOptions(image_size=224))


def test_a_file_with_a_dynamic_image_size_is_verified_at_a_second_size(exported) -> None:
    path = exported("resnet18", "torchvision", dynamic_size=True).output
    report = verify(path, VerifyOptions(**FAST))
    assert report.passed and "dynamic image size" in report.shape_note
    assert [(s.batch_size, s.image_size) for s in report.shapes] == [(1, 224), (1, 160)]


def test_an_unfolded_batchnorm_is_compared_after_it(exported, tmp_path: Path) -> None:
    """Files from other tools may keep BatchNormalization: the conv's point is the BN's output."""

    def unfold_stem_batchnorm(proto: onnx.ModelProto) -> None:
        graph = proto.graph
        index, conv = next((i, n) for i, n in enumerate(graph.node) if n.op_type == "Conv")
        tensors = {t.name: t for t in graph.initializer}
        for name, change in ((conv.input[1], lambda w: w / 2), (conv.input[2], lambda b: b / 2)):
            array = change(numpy_helper.to_array(tensors[name]))
            tensors[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))
        channels = numpy_helper.to_array(tensors[conv.input[1]]).shape[0]
        for name, value in (("bn_scale", 2.0), ("bn_bias", 0.0), ("bn_mean", 0.0)):
            graph.initializer.append(
                numpy_helper.from_array(np.full(channels, value, np.float32), name)
            )
        graph.initializer.append(
            numpy_helper.from_array(np.full(channels, 1 - 1e-5, np.float32), "bn_var")
        )
        folded = conv.output[0]
        conv.output[0] = "conv_before_bn"
        inputs = ["conv_before_bn", "bn_scale", "bn_bias", "bn_mean", "bn_var"]
        graph.node.insert(index + 1, helper.make_node("BatchNormalization", inputs, [folded]))

    path = tampered(exported("resnet18").output, tmp_path, unfold_stem_batchnorm)
    report = verify(path, VerifyOptions(**FAST, localize=True))
    assert report.passed and report.localization.first_divergence is None
    (stem,) = [p for p in report.localization.layers if p.name == "conv1"]
    assert stem.onnx_value != "conv_before_bn"  # compared after the BatchNorm, as eager is


def test_files_made_elsewhere_are_matched_by_topology_or_flags(exported, tmp_path: Path) -> None:
    report = verify(
        exported("resnet18", "seed", exporter="torchscript", opset=17).output,
        VerifyOptions(**FAST, localize=True),
    )
    assert report.passed and report.localization.mapping == "topology"
    assert [p.name for p in report.localization.layers if p.kind == "block"][-1] == "layer4.1"

    def strip_metadata(proto: onnx.ModelProto) -> None:
        del proto.metadata_props[:]

    path = tampered(exported("resnet18").output, tmp_path, strip_metadata)
    with pytest.raises(InputError, match="no resnet-deploy metadata: name the architecture"):
        verify(path, VerifyOptions(**FAST))
    report = verify(path, VerifyOptions(**FAST, arch="resnet18"))
    assert report.passed and report.reference == "flags"


def test_flags_contradicting_the_metadata_and_bad_values_exit_2(exported) -> None:
    path = exported("resnet18").output
    result = run_cli(path, "--arch", "resnet50")
    assert result.exit_code == 2
    assert (
        "--arch resnet50 contradicts" in result.output and "records arch resnet18" in result.output
    )
    result = run_cli(path, "--batch-sizes", "1,0")
    assert result.exit_code == 2 and "at least 1" in result.output
    result = run_cli(path, "--inputs", "missing-folder")
    assert result.exit_code == 2 and "missing-folder: inputs not found" in result.output


def test_int8_files_are_judged_by_their_own_policy_and_not_localized(
    exported, tmp_path: Path
) -> None:
    def claim_int8(proto: onnx.ModelProto) -> None:
        write_metadata(proto, replace(read_metadata(proto), precision="int8"))

    path = tampered(exported("resnet18").output, tmp_path, claim_int8)
    report = verify(path, VerifyOptions(**FAST))
    assert report.passed and report.tolerance.precision == "int8"
    assert not report.tolerance.elementwise
    with pytest.raises(InputError, match="localizing compares fp32 and fp16 files"):
        verify(path, VerifyOptions(**FAST, localize=True))


def test_tf32_is_off_for_cuda_unless_allowed_and_torch_is_restored(exported) -> None:
    cuda = session_config(VerifyOptions(provider="cuda")).provider_options
    assert cuda["use_tf32"] == "0"
    allowed = session_config(VerifyOptions(provider="cuda", allow_tf32=True)).provider_options
    assert allowed["use_tf32"] == "1"
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    verify(exported("resnet18").output, VerifyOptions(**FAST))
    assert (conv.fp32_precision, matmul.fp32_precision) == before


def test_tolerance_policy_by_precision() -> None:
    fp32 = Tolerance.for_precision("fp32")
    assert fp32.elementwise and (fp32.atol, fp32.rtol) == (5e-4, 1e-3)
    fp16 = Tolerance.for_precision("fp16")
    assert not fp16.elementwise and fp16.min_top1_agreement > 0
    assert Tolerance.for_precision("fp16", atol=0.1).elementwise  # asked for, so applied
    assert Tolerance.for_precision("fp32", min_cosine=0.5).min_cosine == 0.5
    with pytest.raises(InputError, match="no tolerance policy for precision 'int4'"):
        Tolerance.for_precision("int4")
    with pytest.raises(InputError, match="--atol must be a finite number"):
        Tolerance.for_precision("fp32", atol=-1.0)


def test_compare_is_safe_near_zero_and_judges_reduced_precision() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((4, 1000))
    reference[0, :10] = 0.0  # exact zeros must not make relative errors infinite
    actual = reference + 1e-6
    errors = compare_outputs(reference, actual, Tolerance.for_precision("fp32"))
    assert errors.max_rel_error < 1e-3 and errors.elements_beyond_tolerance == 0
    assert not Tolerance.for_precision("fp32").failures(errors)
    swapped = reference.copy()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]
    swapped[:, 0] = reference.max(axis=1) + 1  # a different winner in every sample
    fp16 = Tolerance.for_precision("fp16")
    failures = fp16.failures(compare_outputs(reference, swapped, fp16))
    assert any(f.startswith("top-1 agreement 0.000") for f in failures)
