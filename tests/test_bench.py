from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import resnet_deploy.perf.bench as bench_module
from resnet_deploy.errors import InputError
from resnet_deploy.perf.bench import BenchOptions, bench, check_options
from resnet_deploy.runtime.providers import (
    SessionConfig,
    create_session,
    cuda_provider_options,
    input_dtype,
    tensorrt_provider_options,
)
from resnet_deploy.runtime.runners import OrtRunner
from tests.helpers import cli

QUICK = {"warmup_runs": 1, "iterations": 3}


@pytest.mark.no_gpu
def test_cuda_is_refused_naming_the_cause_onnxruntime_logged(r18: Path) -> None:
    result = cli("bench", r18, "--provider", "cuda", "--baseline", "none")
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    found = re.search(r"Error: .*CUDAExecutionProvider.*fell back to CPU\w*: (.+)", result.output)
    assert found, result.output
    assert not found.group(1).startswith("it logged no reason")


def test_cpu_bench_record_is_consistent(r18: Path) -> None:
    report = bench(r18, BenchOptions(batch_sizes=(1, 2), **QUICK))
    assert [b.batch_size for b in report.batches] == [1, 2]
    assert report.provider_options == {"CPUExecutionProvider": {}}
    assert report.threads == report.environment.physical_cores
    assert report.input_dtype == "float32" and report.spinning and not report.io_binding
    assert len(report.model_sha256) == 64 and report.metadata.arch == "resnet18"
    for b in report.batches:
        assert b.error is None
        assert b.runs == b.torch_runs == 3
        assert b.min_ms <= b.p50_ms <= b.p90_ms <= b.p95_ms <= b.p99_ms <= b.max_ms
        assert b.min_ms <= b.mean_ms <= b.max_ms
        assert b.images_per_s == pytest.approx(b.batch_size * 1e3 / b.mean_ms, rel=0.05)
        assert b.speedup_vs_torch == pytest.approx(b.images_per_s / b.torch_images_per_s)
        assert b.session_create_ms > 0 and b.first_inference_ms > 0
        assert any("p99 needs 100" in w for w in b.warnings)  # 3 runs are too few


def test_cli_writes_json_csv_and_png(r18: Path, tmp_path: Path) -> None:
    table, plot = tmp_path / "b.csv", tmp_path / "b.png"
    args = ["bench", r18, "--batch-sizes", "1,2", "--warmup", "0", "--iterations", "2"]
    result = cli(*args, "--baseline", "none", "--json", "--csv", table, "--plot", plot)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert [b["batch_size"] for b in record["batches"]] == [1, 2]
    assert record["environment"]["cpu_model"] and record["metadata"]["arch"] == "resnet18"
    rows = list(csv.DictReader(table.open()))
    assert [r["batch_size"] for r in rows] == ["1", "2"] and float(rows[0]["p99_ms"]) > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = cli(*args, "--csv", table)
    assert again.exit_code == 2 and "--force" in again.output
    assert [r["batch_size"] for r in csv.DictReader(table.open())] == ["1", "2"]


def test_a_failed_batch_size_is_recorded_not_raised(r18: Path, monkeypatch) -> None:
    real, calls = bench_module.create_session, []

    def fails_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory\nmore detail")
        return real(*args, **kwargs)

    monkeypatch.setattr(bench_module, "create_session", fails_second)
    report = bench(r18, BenchOptions(batch_sizes=(1, 64), baseline="none", **QUICK))
    assert report.batches[0].error is None and report.batches[0].runs == 3
    assert report.batches[1].error == "RuntimeError: CUDA out of memory"
    assert report.batches[1].p50_ms is None


def test_fixed_batch_model_refuses_other_batch_sizes(exported) -> None:
    fixed = exported("resnet18", batch=2).output
    with pytest.raises(InputError, match="fixed batch of 2; bench batch size 2 alone") as raised:
        bench(fixed, BenchOptions(batch_sizes=(1, 2)))
    assert raised.value.options == ("batch_sizes",)


def test_io_binding_with_cpu_ortvalues_matches_plain_run(r18: Path) -> None:
    session = create_session(r18, SessionConfig())
    batch = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    plain = OrtRunner(session)
    expected = plain.infer(plain.place(batch))[0]
    with OrtRunner(session, binding_device="cpu") as bound:
        outputs = bound.infer(bound.place(batch))
        assert outputs[0].device_name() == "cpu" and outputs[0].shape() == [2, 1000]
        np.testing.assert_array_equal(outputs[0].numpy(), expected)


def test_fp16_models_get_float16_inputs() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["logits"])],
        "fp16",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT16, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT16, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    session = create_session(model.SerializeToString(), SessionConfig())
    assert input_dtype(session) == np.float16
    x = np.array([[-1, 2, -3, 4]], dtype=np.float16)
    with OrtRunner(session, binding_device="cpu") as runner:
        out = runner.infer(runner.place(x))[0].numpy()
    assert out.dtype == np.float16 and out.tolist() == [[0, 2, 0, 4]]
    onnx.checker.check_model(model)


def test_provider_option_builders() -> None:
    assert cuda_provider_options() == {"device_id": "0"}
    assert cuda_provider_options(
        cudnn_algo="heuristic", cudnn_max_workspace=False, cuda_graph=True
    ) == {
        "device_id": "0",
        "cudnn_conv_algo_search": "HEURISTIC",
        "cudnn_conv_use_max_workspace": "0",
        "enable_cuda_graph": "1",
    }
    with pytest.raises(InputError, match="cuDNN"):
        cuda_provider_options(cudnn_algo="fastest")
    assert tensorrt_provider_options(cache_dir=Path("/cache"), fp16=True) == {
        "device_id": "0",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": "/cache",
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": "/cache",
        "trt_fp16_enable": "True",
    }


@pytest.mark.parametrize(
    ("options", "message", "named"),
    [
        (BenchOptions(cuda_graph=True), "need the cuda provider", "cuda_graph provider"),
        (
            BenchOptions(cudnn_max_workspace=False),
            "need the cuda provider",
            "cudnn_max_workspace provider",
        ),
        (
            BenchOptions(provider="cuda", cuda_graph=True, io_binding=False),
            "needs I/O binding",
            "cuda_graph io_binding",
        ),
        (
            BenchOptions(trt_fp16=True, provider="cuda"),
            "need the tensorrt provider",
            "trt_fp16 provider",
        ),
        (BenchOptions(iterations=5, duration_s=1.0), "not both", "iterations duration_s"),
        (BenchOptions(warmup_runs=0, warmup_s=1.0), "not both", "warmup_runs warmup_s"),
        (BenchOptions(iterations=0), "at least one run", "iterations"),
        (BenchOptions(batch_sizes=(0,)), "at least 1", "batch_sizes"),
        (BenchOptions(provider="tpu"), "unknown provider", ""),
    ],
)
def test_bad_options_are_refused_before_any_work(
    options: BenchOptions, message: str, named: str
) -> None:
    """Each refusal names the concept in words and, as ``options``, the fields it concerns."""
    with pytest.raises(InputError, match=message) as raised:
        check_options(options)
    assert "--" not in str(raised.value)
    if named:
        assert raised.value.options == tuple(named.split())


def test_progress_counts_the_batch_sizes_to_their_total(r18: Path) -> None:
    """A terminal draws a bar from these counts: 0 first, one more per batch size, and the last
    equal to the total."""
    calls = []
    bench(
        r18,
        BenchOptions(batch_sizes=(1, 2), baseline="none", **QUICK),
        progress=lambda step, done=None, total=None: calls.append((step, done, total)),
    )
    counted = [(done, total) for step, done, total in calls if done is not None]
    assert counted == [(0, 2), (1, 2), (2, 2)]
    assert {step for step, done, _ in calls if done is not None} == {"batch sizes"}
    assert any(step.startswith("batch 2: onnxruntime p50") for step, _, _ in calls)
