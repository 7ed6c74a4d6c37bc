"""The GPU paths, tested on the CPU: ONNX Runtime's failure modes are simulated on its own
objects (a run that raises EPFail, a session that claims CUDA but placed its nodes on the CPU,
a refused CUDA-graph capture); everything of ours runs for real."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from resnet_deploy.check.verify import VerifyOptions, onnxruntime_tf32, tf32_in_use
from resnet_deploy.check.verify import session_config as verify_config
from resnet_deploy.convert.quantize import OptimizeOptions, optimize_model
from resnet_deploy.errors import InputError, ProviderError
from resnet_deploy.files import sha256_of
from resnet_deploy.model.eager import torch_tf32
from resnet_deploy.model.metadata import read_metadata, write_metadata
from resnet_deploy.model.onnxfile import load_onnx, load_with_metadata
from resnet_deploy.perf.bench import BenchOptions, eager_runner, session_config
from resnet_deploy.runtime.names import CPU, CUDA, TENSORRT
from resnet_deploy.runtime.placement import PlacementError, check_placement, node_placement
from resnet_deploy.runtime.providers import (
    ENGINE_BUILD_LOG,
    SessionConfig,
    count_engine_builds,
    create_session,
    registered_providers,
    tensorrt_build_note,
    trt_profile,
)
from resnet_deploy.tolerance import Tolerance
from tests.helpers import cli

EP_FAIL = "[ONNXRuntimeError] : 11 : EP_FAIL : TensorRT EP failed to create engine from network."


@pytest.fixture(scope="module")
def r18_int8(r18: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "r18.int8.onnx"
    return optimize_model(r18, OptimizeOptions(output=out, samples=2, guard=False)).output


def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)


def ep_fail(*args: object, **kwargs: object) -> None:
    raise ort_state.EPFail(EP_FAIL)


class FailingRuns:
    """ONNX Runtime's C session whose runs fail with EPFail, as TensorRT's on a new shape."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.run = self.run_with_ort_values = ep_fail

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def test_sessions_run_without_fallback_and_record_where_nodes_run(r18: Path) -> None:
    session = create_session(r18, SessionConfig())
    assert session._enable_fallback is False  # ONNX Runtime's own flag, read by its run()
    placement = session.placement
    assert placement == node_placement(session)
    assert placement.requested == CPU and set(placement.nodes) == {CPU}
    assert placement.op_types[CPU]["Conv"] == 20  # ResNet18: 17 convs and 3 downsamples
    assert placement.nodes[CPU] == sum(placement.op_types[CPU].values())
    assert placement.cpu_compute_nodes == {} and placement.warning() is None


def test_run_time_provider_failure_is_our_error_not_a_cpu_rerun(r18: Path, capfd) -> None:
    """ONNX Runtime's default: EPFail at run time reruns on the CPU and prints to stdout."""
    plain = ort.InferenceSession(str(r18), providers=[CPU])
    plain._sess = FailingRuns(plain._sess)
    (logits,) = plain.run(None, {"input": batch()})  # ... and the rebuilt session answers
    assert logits.shape == (1, 1000)
    assert "Falling back to ['CPUExecutionProvider']" in capfd.readouterr().out

    ours = create_session(r18, SessionConfig())
    ours._sess = FailingRuns(ours._sess)
    with pytest.raises(ProviderError, match="failed while running \\(no CPU fallback\\)"):
        ours.run(None, {"input": batch()})
    value = ort.OrtValue.ortvalue_from_numpy(batch())
    with pytest.raises(ProviderError, match="TensorRT EP failed to create engine"):
        ours.run_with_ort_values(None, {"input": value})
    assert capfd.readouterr().out == ""


def test_run_time_provider_failure_is_one_line_from_the_cli(r18: Path, monkeypatch) -> None:
    monkeypatch.setattr(ort_state.InferenceSession, "run", ep_fail)
    result = cli("verify", r18, "--samples", "1", "--json", "-")
    assert result.exit_code == 2
    assert "Traceback" not in result.output and "Falling back" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert errors == [
        "Error: CPUExecutionProvider failed while running (no CPU fallback): "
        "TensorRT EP failed to create engine from network."
    ]


def test_failures_while_starting_are_provider_errors(r18: Path, monkeypatch) -> None:
    def refuse(*args: object) -> None:
        raise ort_state.Fail(
            "This session cannot use the graph capture feature as requested by the user as "
            "all compute graph nodes have not been partitioned to the CUDAExecutionProvider"
        )

    monkeypatch.setattr(ort_state.InferenceSession, "initialize_session", refuse)
    with pytest.raises(ProviderError, match=r"^CUDA graph capture refused: This session"):
        create_session(r18, SessionConfig())
    monkeypatch.setattr(ort_state.InferenceSession, "initialize_session", ep_fail)
    with pytest.raises(ProviderError, match="CPUExecutionProvider failed to start"):
        create_session(r18, SessionConfig())


@pytest.fixture
def claims_cuda(monkeypatch) -> None:
    """ONNX Runtime reports CUDA started, yet every node was placed on the CPU: the case of a
    GPU provider that takes none of a graph's ops."""
    monkeypatch.setattr(ort.InferenceSession, "get_providers", lambda self: [CUDA, CPU])


def test_int8_placement_lists_cpu_compute_ops(r18_int8: Path, claims_cuda) -> None:
    placement = create_session(r18_int8, SessionConfig(provider="cuda")).placement
    assert placement.requested == CUDA and set(placement.nodes) == {CPU}
    ops = placement.op_types[CPU]
    assert ops["DequantizeLinear"] > ops["QuantizeLinear"] > ops["Conv"] == 20
    assert placement.cpu_compute_nodes == ops  # every op of this graph computes
    assert "DequantizeLinear" in placement.warning()
    assert check_placement(placement, strict=False) == [placement.warning()]
    with pytest.raises(PlacementError, match=r"^1[0-9]{2} compute node.*strict placement$") as e:
        check_placement(placement, strict=True)
    assert e.value.options == ("strict_placement",)
    with pytest.raises(PlacementError, match="not CUDAExecutionProvider: DequantizeLinear"):
        create_session(r18_int8, SessionConfig(provider="cuda", strict_placement=True))


def test_cpu_placed_compute_nodes_warn_in_bench_and_fail_strict(r18: Path, claims_cuda) -> None:
    args = ("bench", r18, "--provider", "cuda", "--no-io-binding", "--baseline", "none")
    args += ("--batch-sizes", "1", "--warmup", "0", "--iterations", "1")
    result = cli(*args, "--json", "-")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["placement"]["cpu_compute_nodes"]["Conv"] == 20
    assert any(
        "compute node(s) run on CPUExecutionProvider" in w for w in record["batches"][0]["warnings"]
    )
    strict = cli(*args, "--strict-placement")
    assert strict.exit_code == 2 and "Traceback" not in strict.output
    assert "Error: --strict-placement: " in strict.output
    verify = cli("verify", r18, "--provider", "cuda", "--strict-placement", "--samples", "1")
    assert verify.exit_code == 2 and "Error: --strict-placement: " in verify.output


def test_bench_and_verify_json_report_cpu_placement(r18: Path) -> None:
    bench = cli(
        "bench",
        r18,
        "--batch-sizes",
        "1",
        "--warmup",
        "0",
        "--iterations",
        "1",
        "--baseline",
        "none",
        "--json",
        "-",
    )
    assert bench.exit_code == 0, bench.output
    placement = json.loads(bench.stdout)["placement"]
    assert placement["requested"] == CPU and list(placement["nodes"]) == [CPU]
    assert placement["op_types"][CPU]["Conv"] == 20 and placement["cpu_compute_nodes"] == {}
    verify = cli("verify", r18, "--samples", "1", "--batch-sizes", "1", "--json", "-")
    assert verify.exit_code == 0, verify.output
    record = json.loads(verify.stdout)
    assert record["placement"] == placement and record["warnings"] == []
    assert record["tf32"] is False and record["tolerance"]["precision"] == "fp32"


def test_verify_json_lists_the_int8_placement_by_op_type(r18_int8: Path) -> None:
    result = cli("verify", r18_int8, "--samples", "1", "--batch-sizes", "1", "--json", "-")
    assert result.exit_code == 0, result.output
    placement = json.loads(result.stdout)["placement"]
    ops = placement["op_types"][CPU]
    assert {"DequantizeLinear", "QuantizeLinear", "Conv", "Add", "Gemm"} <= set(ops)
    assert placement["nodes"] == {CPU: sum(ops.values())}
    assert placement["cpu_compute_nodes"] == {}  # the CPU was asked for


def test_tensorrt_sessions_carry_explicit_profiles_and_a_cache_per_model(
    r18: Path, tmp_path: Path
) -> None:
    _, metadata = load_with_metadata(r18)
    sha = sha256_of(r18)
    options = BenchOptions(provider="tensorrt", trt_cache=tmp_path / "engines")
    per_batch = session_config(
        TENSORRT, options, metadata=metadata, model_sha256=sha, batch_sizes=(8,)
    ).provider_options
    shape = "input:8x3x224x224"
    assert per_batch["trt_profile_min_shapes"] == shape
    assert per_batch["trt_profile_opt_shapes"] == per_batch["trt_profile_max_shapes"] == shape
    folder = tmp_path / "engines" / sha[:16] / "batch8_224"
    assert per_batch["trt_engine_cache_path"] == str(folder)
    assert per_batch["trt_timing_cache_path"] == str(tmp_path / "engines")  # shared timings
    assert folder.is_dir()
    loadgen = session_config(
        TENSORRT, options, metadata=metadata, model_sha256=sha, batch_sizes=(1, 32)
    ).provider_options
    assert loadgen["trt_profile_min_shapes"] == "input:1x3x224x224"
    assert loadgen["trt_profile_max_shapes"] == "input:32x3x224x224"
    assert loadgen["trt_engine_cache_path"].endswith(f"{sha[:16]}/batch1-32_224")
    other = session_config(
        TENSORRT, options, metadata=metadata, model_sha256="0" * 64, batch_sizes=(8,)
    )
    assert other.provider_options["trt_engine_cache_path"] != str(folder)  # weights differ
    note = tensorrt_build_note(
        session_config(TENSORRT, options, metadata=metadata, model_sha256=sha, batch_sizes=(8,))
    )
    assert note and shape in note and str(folder) in note
    cpu = session_config(CPU, BenchOptions(), metadata=metadata, batch_sizes=(8,))
    assert cpu.provider_options == {} and tensorrt_build_note(cpu) is None


def test_verify_plans_one_tensorrt_profile_for_its_sweep() -> None:
    shapes = [(1, 224), (2, 224), (7, 224), (1, 160), (2, 160), (7, 160)]
    options = verify_config(VerifyOptions(provider="tensorrt"), shapes=shapes).provider_options
    assert options["trt_profile_min_shapes"] == "input:1x3x160x160"
    assert options["trt_profile_opt_shapes"] == options["trt_profile_max_shapes"]
    assert options["trt_profile_max_shapes"] == "input:7x3x224x224"
    assert trt_profile("x", (4,), (224,)).label == "batch4_224"
    with pytest.raises(InputError):
        trt_profile("x", (), (224,))


def test_tensorrt_is_registered_with_cuda_and_fp16_files_enable_fp16(
    r18: Path, tmp_path: Path
) -> None:
    proto = load_onnx(r18)
    assert registered_providers(TENSORRT, {"device_id": "1"}, proto) == [
        (TENSORRT, {"device_id": "1"}),
        (CUDA, {"device_id": "1"}),
    ]
    assert registered_providers(CUDA, {}, proto) == [(CUDA, {})]
    write_metadata(proto, replace(read_metadata(proto), precision="fp16"))
    (trt, _) = registered_providers(TENSORRT, {}, proto)
    assert trt[1] == {"trt_fp16_enable": "True"}
    (trt, _) = registered_providers(TENSORRT, {"trt_fp16_enable": "False"}, proto)
    assert trt[1] == {"trt_fp16_enable": "False"}  # an explicit choice wins


def test_engine_builds_are_counted_from_the_log() -> None:
    log = f"{ENGINE_BUILD_LOG} graph 1\nanother line\n{ENGINE_BUILD_LOG} graph 2\n"
    assert count_engine_builds(log) == 2 and count_engine_builds("") == 0


def test_tf32_policy_picks_the_tolerance(monkeypatch) -> None:
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    assert not tf32_in_use(CUDA, VerifyOptions(provider="cuda"))
    assert tf32_in_use(CUDA, VerifyOptions(provider="cuda", allow_tf32=True))
    assert tf32_in_use(TENSORRT, VerifyOptions(provider="tensorrt"))  # no switch to turn it off
    assert onnxruntime_tf32(TENSORRT, {}).startswith("on (TensorRT's default")
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    assert not tf32_in_use(TENSORRT, VerifyOptions(provider="tensorrt"))
    assert onnxruntime_tf32(TENSORRT, {}) == "off (NVIDIA_TF32_OVERRIDE=0)"
    assert not tf32_in_use(CPU, VerifyOptions(allow_tf32=True))
    tf32 = Tolerance.for_precision("tf32")
    assert not tf32.elementwise and tf32.min_cosine == Tolerance.for_precision("fp16").min_cosine


def test_gpu_eager_baseline_matches_onnxruntime_and_restores_torch(r18: Path) -> None:
    _, metadata = load_with_metadata(r18)
    model = torch.nn.Identity()
    fp16 = replace(metadata, precision="fp16")
    runner = eager_runner(model, True, fp16, BenchOptions(provider="cuda"), threads=1)
    assert (runner.dtype, runner.cudnn_benchmark, runner.tf32) == (torch.float16, True, True)
    assert runner.describe() == "PyTorch eager, float16 on cuda, cudnn.benchmark on, TF32 on"
    heuristic = BenchOptions(provider="cuda", cudnn_algo="heuristic")
    assert eager_runner(model, True, metadata, heuristic, threads=1).cudnn_benchmark is False
    cpu = eager_runner(model, False, fp16, BenchOptions(), threads=2)
    assert cpu.describe() == "PyTorch eager, float32 on cpu, 2 threads"
    conv = torch.backends.cudnn.conv
    before = torch.backends.cudnn.benchmark, conv.fp32_precision
    with runner:
        assert torch.backends.cudnn.benchmark and conv.fp32_precision == "tf32"
    assert (torch.backends.cudnn.benchmark, conv.fp32_precision) == before
    with torch_tf32(False) as switches:
        assert set(switches.values()) == {"ieee"}
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
