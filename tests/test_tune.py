"""tune: a pruned search under a p99 bound, judged by LoadGen's Server peak search, written out.

ResNet18 on 32x32 inputs (milliseconds a sample, so LoadGen's 459 queries take seconds) and a
small budget; the bound is generous so that a busy test machine still has candidates under it
and LoadGen steps that run are VALID (speed itself belongs in benchmarks/).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import resnet_deploy.perf.tune as tune_module
from resnet_deploy.cli import main
from resnet_deploy.convert.quantize import OptimizeOptions, optimize_model
from resnet_deploy.perf.tune import Candidate, TuneOptions, tune
from resnet_deploy.serving.repository import parse_config

pytest.importorskip("mlperf_loadgen")
LOOSE = {"slo_p99_ms": 60_000.0, "budget_s": 12.0, "loadgen_s": 1.0, "loadgen_min_queries": 8}


@pytest.fixture(scope="module")
def models(exported, tmp_path_factory) -> tuple[Path, Path]:
    source = exported("resnet18", image_size=32).output
    int8 = tmp_path_factory.mktemp("tune") / "resnet18.int8.onnx"
    optimize_model(source, OptimizeOptions(samples=4, guard=False, output=int8))
    return source, int8


@pytest.mark.slow
def test_search_winner_loadgen_and_outputs(models, tmp_path: Path):
    fp32, int8 = models
    config, plot, record = tmp_path / "config.pbtxt", tmp_path / "tune.png", tmp_path / "t.json"
    args = ["tune", str(fp32), "--int8", str(int8), "--slo-p99-ms", "60000", "--budget-s", "30"]
    args += ["--loadgen-s", "1", "--max-batch", "2"]
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

    # LoadGen ran each as it would be served: its instances, threads and batch
    peaks = {"winner": report["server_qps"], "default": report["default_server_qps"]}
    searches = {"winner": report["loadgen"], "default": report["default_loadgen"]}
    if report["batch1"] is not None:
        peaks["batch 1"], searches["batch 1"] = (
            report["batch1_server_qps"],
            report["batch1_loadgen"],
        )
    notes = "\n".join(report["notes"])
    for name, loadgen in searches.items():
        candidate = report[name.replace(" ", "")]
        if loadgen is None:  # the budget ran out under load: the report says so, no peak
            assert f"LoadGen did not check the {name}" in notes and peaks[name] is None
            continue
        assert loadgen["scenario"] == "Server" and loadgen["latency_bound_ms"] == 60_000.0
        assert loadgen["instances"] == candidate["instances"]
        assert loadgen["threads"] == candidate["threads"]
        assert loadgen["max_batch"] == candidate["batch_size"]
        steps = loadgen["peak_search"]
        assert 1 <= len(steps) <= tune_module.PEAK_STEPS
        valid_steps = [s["target_qps"] for s in steps if s["valid"]]
        assert peaks[name] == (max(valid_steps) if valid_steps else None)
        assert loadgen["valid"] == bool(valid_steps)
    chosen = report["deployed"]
    if searches[chosen] is None:  # not checked: no verdict, and the output says why
        assert report["valid"] is None and "LoadGen did not check" in result.output
    else:  # a step that runs LoadGen's 459 queries at a 60 s bound is VALID
        assert report["valid"] is True and searches[chosen]["valid"] is True
        assert peaks[chosen] > 0 and peaks[chosen] == max(p or 0 for p in peaks.values())
        assert f"LoadGen's verdict on the {chosen}: VALID" in result.output
    if all(peaks.values()):
        gain = peaks[chosen] / peaks["default"]
        assert report["server_gain_vs_default"] == pytest.approx(gain)
    deployed = report[chosen.replace(" ", "")]

    # what is written out is the one deployed
    assert f"--instances {deployed['instances']}" in report["serve_flags"]
    assert f"--threads {deployed['threads']}" in report["serve_flags"]
    assert report["serve_flags"].endswith("--spin" if deployed["spin"] else "--no-spin")
    parsed = parse_config(config.read_text())
    assert parsed.instance_group[0].count == deployed["instances"]
    assert parsed.max_batch_size == deployed["batch_size"]
    threads = parsed.parameters["intra_op_thread_count"].string_value
    assert threads == str(deployed["threads"])
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert "highest VALID target QPS" in result.output


@pytest.mark.parametrize(
    ("winner_qps", "batch1_qps", "default_qps", "deployed", "gain"),
    [
        (20.0, 15.0, 10.0, "winner", 2.0),
        (10.0, 10.0, 10.0, "winner", 1.0),  # a tie keeps the winner
        (10.0, 14.0, 12.0, "batch 1", 14.0 / 12.0),  # LoadGen prefers the unbatched one
        (10.0, None, 20.0, "default", 1.0),
        (None, None, 5.0, "default", 1.0),  # no VALID step for the winner
        (None, None, None, "winner", None),
    ],
)
def test_what_loadgen_serves_most_with_is_written_out(
    monkeypatch, winner_qps, batch1_qps, default_qps, deployed, gain
):
    winner = Candidate("batch", "int8", Path("w.onnx"), 2, 1, 2, True)
    batch1 = Candidate("layout", "int8", Path("w.onnx"), 2, 1, 1, True)
    default = Candidate("default", "fp32", Path("d.onnx"), 1, 2, 1, True)
    peaks = {"winner": winner_qps, "batch 1": batch1_qps, "default": default_qps}
    budgets = {}

    def peak_search(report, name, candidate, model, budget_s, options, progress):
        assert model is files[candidate.precision]  # the file read once, handed down
        budgets[name] = budget_s
        qps = peaks[name]
        time.sleep(0.05)
        return SimpleNamespace(valid=qps is not None, target_qps=qps or 1.0)

    monkeypatch.setattr(tune_module, "_peak_search", peak_search)
    report = SimpleNamespace(
        winner=winner, batch1=batch1, default=default, notes=[], server_gain_vs_default=None
    )
    files = {c.precision: SimpleNamespace(path=c.model) for c in (winner, default)}
    end = time.perf_counter() + 9
    calls = []
    tune_module._loadgen_stage(report, files, TuneOptions(), end, lambda *c: calls.append(c))
    assert [c[1:] for c in calls if len(c) == 3] == [(i, 3) for i in range(4)]  # the finalists
    assert (report.server_qps, report.batch1_server_qps) == (winner_qps, batch1_qps)
    assert report.default_server_qps == default_qps
    assert report.deployed == deployed
    assert report.server_gain_vs_default == (None if gain is None else pytest.approx(gain))
    assert report.valid == (peaks[deployed] is not None)
    assert any("so it is what is written out" in n for n in report.notes) == (deployed != "winner")
    # each gets an equal share of the time left when its turn comes
    assert budgets["winner"] == pytest.approx(3.0, abs=0.01)
    assert budgets["batch 1"] == pytest.approx((9 - 0.05) / 2, abs=0.02)
    assert 8.8 < budgets["default"] <= 9 - 0.1


def test_the_unbatched_alternative_is_the_fastest_batch1_under_the_bound():
    def candidate(batch, instances, images_per_s, p99_ms):
        c = Candidate("layout", "int8", Path("m.onnx"), instances, 2 // instances, batch, True)
        c.images_per_s, c.p99_ms, c.meets_slo = images_per_s, p99_ms, p99_ms <= 100.0
        return c

    default = candidate(1, 1, 20.0, 40.0)
    fast, over = candidate(1, 2, 25.0, 80.0), candidate(1, 2, 30.0, 120.0)
    batched = candidate(4, 2, 31.0, 90.0)
    pick = tune_module._unbatched_alternative
    assert pick([default, fast, over, batched], batched, default) is fast
    assert pick([default, over, batched], batched, default) is None  # only the default is left
    assert pick([default, fast, batched], fast, default) is None  # the winner does not batch


@pytest.mark.slow
def test_latency_objective_does_not_batch(models):
    fp32, _ = models
    report = tune(fp32, TuneOptions(objective="latency", **LOOSE))
    assert all(c.stage != "batch" for c in report.candidates)
    under = [c for c in report.candidates if c.meets_slo]
    assert report.winner.p99_ms == min(c.p99_ms for c in under)


@pytest.mark.slow
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


def test_a_budget_too_small_to_measure_still_writes_the_record(models, tmp_path: Path):
    """Nothing measured is a result: the --json record says why, and the plot is named unmade."""
    fp32, _ = models
    record, plot = tmp_path / "tune.json", tmp_path / "tune.png"
    args = ["tune", str(fp32), "--budget-s", "0.001", "--json", str(record), "--plot", str(plot)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "nothing was measured: the time budget of 0.001 s ran out" in result.output
    assert "nothing to plot" not in result.output and not plot.exists()
    written = json.loads(record.read_text())
    assert written["winner"] is None and written["candidates"]
    assert any(f"{plot}: not written" in note for note in written["notes"])
