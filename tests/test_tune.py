"""tune: a pruned search under a p99 bound, its winner checked by LoadGen and written out.

ResNet18 and a tiny budget; the bound is generous so that a busy test machine still has
candidates under it (speed itself belongs in benchmarks/).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from resnet_deploy.cli import main
from resnet_deploy.optimize import OptimizeOptions, optimize_model
from resnet_deploy.triton import parse_config
from resnet_deploy.tune import TuneOptions, tune

pytest.importorskip("mlperf_loadgen")
LOOSE = {"slo_p99_ms": 60_000.0, "budget_s": 12.0, "loadgen_s": 1.0, "loadgen_min_queries": 8}


@pytest.fixture(scope="module")
def models(exported, tmp_path_factory) -> tuple[Path, Path]:
    source = exported("resnet18").output
    int8 = tmp_path_factory.mktemp("tune") / "resnet18.int8.onnx"
    optimize_model(source, OptimizeOptions(samples=4, guard=False, output=int8))
    return source, int8


def test_search_winner_loadgen_and_outputs(models, tmp_path: Path):
    fp32, int8 = models
    config, plot, record = tmp_path / "config.pbtxt", tmp_path / "tune.png", tmp_path / "t.json"
    args = ["tune", str(fp32), "--int8", str(int8), "--slo-p99-ms", "60000", "--budget-s", "12"]
    args += ["--loadgen-s", "1", "--loadgen-min-queries", "8", "--max-batch", "2"]
    args += ["--triton-config", str(config), "--plot", str(plot), "--json", str(record)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(record.read_text())
    stages = {c["stage"] for c in report["candidates"]}
    assert {"default", "precision", "layout"} <= stages
    assert {c["precision"] for c in report["candidates"]} == {"fp32", "int8"}
    winner, default = report["winner"], report["default"]
    measured = [c for c in report["candidates"] if c["meets_slo"]]
    assert winner["images_per_s"] == max(c["images_per_s"] for c in measured)
    assert report["gain_vs_default"] == pytest.approx(
        winner["images_per_s"] / default["images_per_s"]
    )
    assert (default["instances"], default["spin"]) == (1, True)
    assert isinstance(report["valid"], bool) and report["loadgen"]["scenario"] == "Server"
    assert report["loadgen"]["latency_bound_ms"] == pytest.approx(60_000.0)
    assert f"--instances {winner['instances']}" in report["serve_flags"]
    assert f"--threads {winner['threads']}" in report["serve_flags"]
    parsed = parse_config(config.read_text())
    assert parsed.instance_group[0].count == winner["instances"]
    assert parsed.max_batch_size == winner["batch_size"]
    threads = parsed.parameters["intra_op_thread_count"].string_value
    assert threads == str(winner["threads"])
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "winner:" in result.output or report["winner"] is None


def test_latency_objective_does_not_batch(models):
    fp32, _ = models
    report = tune(fp32, TuneOptions(objective="latency", **LOOSE))
    assert all(c.stage != "batch" for c in report.candidates)
    under = [c for c in report.candidates if c.meets_slo]
    assert report.winner.p99_ms == min(c.p99_ms for c in under)


def test_impossible_bound_has_no_winner(models):
    fp32, _ = models
    options = TuneOptions(slo_p99_ms=0.001, budget_s=4.0, loadgen_s=1.0)
    report = tune(fp32, options)
    assert report.winner is None and report.valid is None and report.serve_flags == ""
    assert any("no candidate met" in note for note in report.notes)
    # bench's default stops at the first batch over the bound, and the batch stage never ran
    assert [c.batch_size for c in report.candidates if c.stage == "default"] == [1]


def test_bad_options(models):
    fp32, _ = models
    result = CliRunner().invoke(main, ["tune", str(fp32), "--budget-s", "0"])
    assert result.exit_code == 2 and "--budget-s" in result.output
    result = CliRunner().invoke(main, ["tune", str(fp32), "--provider", "tensorrt"])
    assert result.exit_code == 2 and "cpu and cuda" in result.output
