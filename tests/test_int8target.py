"""int8 targets: what each file's graph holds, that each passes the guard here, and the refusals.

The machine without VNNI is simulated by pointing the rule at an injected /proc/cpuinfo text;
the rule itself always runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from resnet_deploy import environment
from resnet_deploy.check.verify import VerifyOptions, verify
from resnet_deploy.cli import main
from resnet_deploy.convert.quantize import OptimizeOptions, OptimizeResult, optimize_model
from resnet_deploy.environment import CpuInfo, cpu_flags, parse_cpuinfo
from resnet_deploy.errors import InputError
from resnet_deploy.model.metadata import read_metadata
from resnet_deploy.perf.bench import BenchOptions, bench
from resnet_deploy.runtime import int8target
from resnet_deploy.runtime.int8target import check_target, file_target, require_target
from resnet_deploy.serving.repository import TritonOptions, write_model_repository

NO_VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
WITH_VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni\n"
TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@pytest.fixture(scope="module")
def made(exported, tmp_path_factory) -> dict[str, OptimizeResult]:
    """One guarded ResNet18 file per target (the guard's verdict is part of what is tested)."""
    folder = tmp_path_factory.mktemp("targets")
    source = folder / "resnet18.onnx"
    source.write_bytes(exported("resnet18", "torchvision").output.read_bytes())
    return {
        target: optimize_model(
            source,
            OptimizeOptions(
                precision="int8",
                target=target,
                samples=8,
                guard_samples=4,
                output=folder / f"resnet18.{target}.onnx",
            ),
        )
        for target in int8target.TARGETS
    }


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """``machine(text)``: make the rule read ``text`` as this machine's /proc/cpuinfo."""

    def use(text: str) -> None:
        monkeypatch.setattr(environment, "cpuinfo", lambda: parse_cpuinfo(text))

    return use


def load(result: OptimizeResult) -> onnx.ModelProto:
    return onnx.load(str(result.output))


def zero_points(proto: onnx.ModelProto) -> list[np.ndarray]:
    constants = {t.name: t for t in proto.graph.initializer}
    return [
        numpy_helper.to_array(constants[n.input[2]])
        for n in proto.graph.node
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2
    ]


def weight_dequantizers(proto: onnx.ModelProto) -> dict[str, tuple[onnx.NodeProto, np.ndarray]]:
    """Conv and Gemm node name -> (the DequantizeLinear of its weight, the quantized weight)."""
    constants = {t.name: t for t in proto.graph.initializer}
    producers = {out: n for n in proto.graph.node for out in n.output}
    found = {}
    for node in proto.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            dq = producers.get(node.input[1])
            assert dq is not None and dq.op_type == "DequantizeLinear", f"{node.name}: float weight"
            found[node.name] = (dq, numpy_helper.to_array(constants[dq.input[0]]))
    return found


def axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def test_every_target_passes_the_guard_on_this_cpu(made: dict[str, OptimizeResult]) -> None:
    for target, result in made.items():
        assert result.guard.passed, f"{target}: {result.guard.summary()}"
        meta = read_metadata(load(result))
        assert (meta.precision, meta.target) == ("int8", target)
        assert min(s.errors.min_cosine_similarity for s in result.guard.shapes) >= 0.97


@pytest.mark.parametrize("target", ["cpu", "cpu-avx2"])
def test_cpu_targets_have_uint8_activations_and_per_channel_int8_weights(
    made: dict[str, OptimizeResult], target: str
) -> None:
    proto = load(made[target])
    weights = weight_dequantizers(proto)
    assert len(weights) == 21  # 20 convolutions and the classifier
    for dq, quantized in weights.values():
        assert quantized.dtype == np.int8
        assert axis(dq) == 0  # one scale per output channel
        scale = next(t for t in proto.graph.initializer if t.name == dq.input[1])
        assert list(scale.dims) == [quantized.shape[0]]
    activation_types = {
        z.dtype for z in zero_points(proto) if z.ndim == 0
    }  # per-tensor: activations
    assert activation_types == {np.dtype(np.uint8)}
    largest = max(int(np.abs(q.astype(np.int32)).max()) for _, q in weights.values())
    if target == "cpu":
        assert largest == 127  # the full 8 bits
    else:
        assert largest <= 64  # 7 bits: two products of 255 * 64 never saturate 16 bits


def test_tensorrt_target_is_symmetric_int8_as_tensorrt_builds_it(
    made: dict[str, OptimizeResult],
) -> None:
    proto = load(made["tensorrt"])
    points = zero_points(proto)
    assert points and all(z.dtype == np.int8 and not z.any() for z in points)
    weights = weight_dequantizers(proto)
    assert len(weights) == 21
    for name, (dq, quantized) in weights.items():
        assert quantized.dtype == np.int8 and axis(dq) == 0, name  # Gemm has transB=1
        assert int(np.abs(quantized.astype(np.int32)).max()) <= 127  # TensorRT: [-127, 127]
    # Biases stay float: TensorRT dequantizes int8, not the int32 a quantized bias would be.
    assert not [t.name for t in proto.graph.initializer if t.data_type == TensorProto.INT32]
    # The logits come straight from the classifier, in float: no Q/DQ after a weighted op.
    last = next(n for n in proto.graph.node if proto.graph.output[0].name in n.output)
    assert last.op_type == "Gemm"
    # Every activation DequantizeLinear feeds exactly one node (dedicated pairs).
    consumers: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    constants = {t.name for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] not in constants:
            assert consumers.get(node.output[0]) == 1, node.name
    # The input itself is quantized, so the first convolution runs in int8 too.
    first = next(n for n in proto.graph.node if n.input[0] == proto.graph.input[0].name)
    assert first.op_type == "QuantizeLinear"


def test_old_and_foreign_int8_files_are_judged_by_their_graph(
    made: dict[str, OptimizeResult],
) -> None:
    for target, expected in (("cpu", "cpu"), ("cpu-avx2", "cpu"), ("tensorrt", "tensorrt")):
        proto = load(made[target])
        kept = [p for p in proto.metadata_props if p.key != "target"]
        del proto.metadata_props[:]
        proto.metadata_props.extend(kept)
        meta = read_metadata(proto)
        assert meta.target == ""  # a file from before targets still reads
        assert file_target(proto, meta) == expected
        del proto.metadata_props[:]
        assert file_target(proto, None) == expected


def test_cpu_flags_are_read_from_cpuinfo_text() -> None:
    assert "avx512_vnni" in cpu_flags(WITH_VNNI)
    assert cpu_flags(NO_VNNI) == frozenset({"fpu", "sse2", "avx", "avx2", "fma"})
    assert cpu_flags("processor\t: 0\nFeatures\t: fp asimd\n") is None  # ARM: no x86 rule
    # One parse gives the model name recorded with results too: the first CPU's, once.
    two_cpus = "model name\t: Xeon A\nflags\t: avx\nmodel name\t: Xeon B\nflags\t: sse2\n"
    assert parse_cpuinfo(two_cpus) == CpuInfo(model="Xeon A", flags=frozenset({"avx"}))


def test_the_rule_for_each_target_and_provider(made: dict[str, OptimizeResult]) -> None:
    no_vnni, vnni = cpu_flags(NO_VNNI), cpu_flags(WITH_VNNI)
    protos = {t: load(r) for t, r in made.items()}
    metas = {t: read_metadata(p) for t, p in protos.items()}

    def check(target: str, provider: str, flags=None, local=True):
        return check_target(protos[target], metas[target], provider, flags=flags, local=local)

    for target in ("cpu", "cpu-avx2"):
        refused = check(target, TENSORRT)
        assert refused.refusal and "--target tensorrt" in refused.refusal
    assert check("tensorrt", TENSORRT).refusal is None
    assert check("tensorrt", TENSORRT).warnings == []
    assert "--target cpu-avx2" in check("cpu", CPU, no_vnni).warnings[0]
    assert check("cpu", CPU, vnni).warnings == []
    assert check("cpu-avx2", CPU, no_vnni).warnings == []
    assert "VNNI" in check("cpu", CPU, vnni, local=False).warnings[0]  # a Triton fleet's CPUs
    assert "tensorrt" in check("cpu", CUDA).warnings[0]
    assert "not representative" in check("tensorrt", CPU, no_vnni).warnings[0]


def test_bench_warns_on_a_cpu_without_vnni_and_not_on_one_with_it(
    made: dict[str, OptimizeResult], machine
) -> None:
    options = BenchOptions(batch_sizes=(1,), warmup_runs=1, iterations=2, baseline="none")
    machine(NO_VNNI)
    lines: list[str] = []
    report = bench(made["cpu"].output, options, progress=lambda step, *_: lines.append(step))
    assert any("--target cpu-avx2" in w for w in report.warnings)
    assert any(line.startswith("warning: ") and "cpu-avx2" in line for line in lines)
    assert report.batches[0].error is None  # a warning, not a refusal: it still runs
    machine(WITH_VNNI)
    assert bench(made["cpu"].output, options).warnings == []


def test_verify_warns_too(made: dict[str, OptimizeResult], machine) -> None:
    machine(NO_VNNI)
    report = verify(made["cpu"].output, VerifyOptions(batch_sizes=(1,), samples=1))
    assert report.passed and "--target cpu-avx2" in report.warnings[0]


def test_tensorrt_provider_refuses_a_uint8_file_before_starting(
    made: dict[str, OptimizeResult],
) -> None:
    """No GPU here: the refusal must come from the rule, before any session is tried."""
    path = made["cpu"].output
    with pytest.raises(InputError, match="--target tensorrt"):
        bench(path, BenchOptions(provider="tensorrt", batch_sizes=(1,), baseline="none"))
    with pytest.raises(InputError, match="--target tensorrt"):
        verify(path, VerifyOptions(provider="tensorrt"))
    result = CliRunner().invoke(main, ["bench", str(path), "--provider", "tensorrt"])
    assert result.exit_code == 2 and "--target tensorrt" in result.stderr
    assert "Traceback" not in result.output


def test_triton_tensorrt_refuses_uint8_and_builds_int8_from_the_tensorrt_file(
    made: dict[str, OptimizeResult], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    args = ["triton", str(made["cpu"].output), "--repo", str(repo), "--tensorrt"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and "--target tensorrt" in refused.stderr
    assert not repo.exists()
    args = ["triton", str(made["tensorrt"].output), "--repo", str(repo), "--tensorrt", "--json"]
    written = CliRunner().invoke(main, args)
    assert written.exit_code == 0, written.output
    assert 'value: "INT8"' in json.loads(written.stdout)["config_text"]


def test_triton_cpu_instances_note_the_vnni_requirement(
    made: dict[str, OptimizeResult], tmp_path: Path
) -> None:
    options = TritonOptions(repo=tmp_path / "repo", kind="cpu")
    result = write_model_repository(made["cpu"].output, options)
    assert any("--target cpu-avx2" in note for note in result.notes)


def test_serve_entry_point_returns_warnings_and_raises_refusals(
    made: dict[str, OptimizeResult],
) -> None:
    proto = load(made["cpu"])
    meta = read_metadata(proto)
    assert require_target(proto, meta, CPU, flags=cpu_flags(WITH_VNNI)) == []
    with pytest.raises(InputError, match="--target tensorrt"):
        require_target(proto, meta, TENSORRT)


def _one_conv(weight: int, channels: int = 64) -> bytes:
    """u8 input -> int8 1x1 conv with every weight ``weight`` -> u8 output, as QDQ."""
    inits = [
        numpy_helper.from_array(np.array(1.0, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.uint8), "xz"),
        numpy_helper.from_array(np.full((8, channels, 1, 1), weight, np.int8), "w"),
        numpy_helper.from_array(np.ones(8, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(8, np.int8), "wz"),
        numpy_helper.from_array(np.array(10000.0, np.float32), "ys"),
        numpy_helper.from_array(np.array(0, np.uint8), "yz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
        helper.make_node("Conv", ["xd", "wd"], ["c"]),
        helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "one_conv", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    return model.SerializeToString()


def _integer_kernel(weight: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(_one_conv(weight), options, providers=[CPU])
    x = np.full((1, 64, 4, 4), 255.0, np.float32)
    return float(session.run(None, {"x": x})[0].flat[0])


def test_seven_bit_weights_are_exact_and_eight_bits_saturate_exactly_without_vnni() -> None:
    """The evidence for cpu-avx2: 64 products of 255 x w, summed by ONNX Runtime's int8 conv.

    Exact sums are 2,072,640 (w = 127) and 1,044,480 (w = 64); the output's step is 10,000.
    Without VNNI, pairs of 255 x 127 overflow 16 bits and clamp to 32,767 each (1,048,544).
    """
    assert _integer_kernel(64) == 1_040_000
    if int8target.has_vnni(cpu_flags()):
        assert _integer_kernel(127) == 2_070_000
    else:
        assert _integer_kernel(127) == 1_050_000
