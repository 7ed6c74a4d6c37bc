"""MLPerf LoadGen scenarios: short runs (1 s, a handful of queries) that LoadGen itself drives.

Nothing here asserts a time: the machine is shared. Short runs are mostly INVALID (too few
queries for early stopping); what is checked is that LoadGen's own logs were read back.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import resnet_deploy.perf.loadgen.driver as loadgen_module
from resnet_deploy.data.images import load_batch
from resnet_deploy.errors import InputError, ResnetDeployError
from resnet_deploy.perf.bench_options import BenchOptions
from resnet_deploy.perf.loadgen import (
    ScenarioOptions,
    check_scenario_options,
    format_result,
    run_scenario,
)
from resnet_deploy.perf.loadgen.logs import parse_detail
from resnet_deploy.perf.loadgen.samples import Preprocessing, SampleLibrary
from resnet_deploy.perf.loadgen.sut import BatchingSut
from resnet_deploy.runtime.providers import SessionConfig, create_session
from resnet_deploy.runtime.runners import OrtRunner
from resnet_deploy.serving.client import EndpointOptions
from tests.helpers import cli

pytest.importorskip("mlperf_loadgen")

SHORT = {"min_duration_s": 1.0, "min_queries": 4}


@pytest.fixture(scope="module")
def small(exported) -> Path:
    """ResNet18 on 32x32 inputs: milliseconds a sample, so hundreds of queries take seconds."""
    return exported("resnet18", image_size=32).output


@pytest.fixture(scope="module")
def labelled(r18: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five noise images in class-index subfolders, labelled with the model's own answers."""
    folder = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (60 + 10 * i, 90, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    session = create_session(r18, SessionConfig())
    batch = load_batch(paths, 224)
    predicted = session.run(None, {session.get_inputs()[0].name: batch})[0].argmax(axis=1)
    for path, label in zip(paths, predicted.tolist(), strict=True):
        (folder / str(label)).mkdir(exist_ok=True)
        path.rename(folder / str(label) / path.name)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario", "extra"),
    [
        ("singlestream", {}),
        ("multistream", {}),
        ("server", {"target_qps": 5.0, "latency_bound_ms": 5000.0}),
        ("offline", {"samples": 8}),
    ],
)
def test_each_scenario_gives_a_parsed_result(r18: Path, scenario: str, extra: dict) -> None:
    result = run_scenario(r18, ScenarioOptions(scenario=scenario, **SHORT, **extra))
    assert result.scenario.lower() == scenario and result.mode == "PerformanceOnly"
    assert result.samples_per_s > 0 and result.queries >= 1
    assert 0 < result.min_ms <= result.p50_ms <= result.p99_ms <= result.max_ms
    assert result.min_duration_ms == 1000 and result.loadgen_version.startswith(("5.", "6."))
    assert result.valid == (result.invalid_reasons == [])
    assert result.log_dir is None and result.mean_batch_size >= 1
    assert set(result.engine_batch_sizes) <= set(result.warmed_batch_sizes)  # no cold shape
    if scenario == "singlestream":
        assert result.latency_metric_percentile == 90 and result.latency_metric_ms > 0
        assert result.samples_per_query == 1 and result.mean_batch_size == 1
    if scenario == "multistream":
        assert result.latency_metric_percentile == 99 and result.samples_per_query == 8
        assert result.mean_batch_size == 8  # each query's eight samples run as one batch
        assert any("662" in reason for reason in result.invalid_reasons)  # early stopping
    if scenario == "server":
        assert result.target_qps == 5.0 and result.latency_bound_ms == 5000.0
    if scenario == "offline":
        assert result.queries == 1 and result.target_qps > 0  # measured, as it was not given
        assert any("no --target-qps" in note for note in result.notes)


@pytest.mark.slow
def test_impossible_server_target_is_invalid_and_says_why(r18: Path, tmp_path: Path) -> None:
    options = ScenarioOptions(
        scenario="server", target_qps=10000, log_dir=tmp_path / "logs", **SHORT
    )
    result = run_scenario(r18, options)
    assert not result.valid
    assert result.invalid_reasons[0].startswith("Performance constraints not satisfied (p99")
    assert any("Too many outstanding queries" in r for r in result.invalid_reasons)
    assert any("Reduce target QPS" in r for r in result.recommendations)
    summary = (tmp_path / "logs" / "mlperf_log_summary.txt").read_text()
    assert "Result is : INVALID" in summary and (tmp_path / "logs/mlperf_log_detail.txt").is_file()
    assert result.log_dir == tmp_path / "logs"


@pytest.mark.slow
def test_accuracy_from_loadgens_log(r18: Path, labelled: Path, tmp_path: Path) -> None:
    folder = labelled
    options = ScenarioOptions(
        scenario="offline", images=folder, accuracy=True, log_dir=tmp_path / "right"
    )
    result = run_scenario(r18, options)
    assert result.mode == "AccuracyOnly" and result.valid
    assert result.top1_accuracy == 1.0 and result.accuracy_samples == 5
    assert (tmp_path / "right" / "mlperf_log_accuracy.json").stat().st_size > 10

    wrong = tmp_path / "wrong.txt"  # a labels file instead of the folders, every label off by one
    lines = [
        f"{p.relative_to(folder).as_posix()}\t{(int(p.parent.name) + 1) % 1000}"
        for p in sorted(folder.rglob("*.png"))
    ]
    wrong.write_text("# name\tclass\n" + "\n".join(lines) + "\n")
    options = ScenarioOptions(scenario="singlestream", images=folder, labels=wrong, accuracy=True)
    assert run_scenario(r18, options).top1_accuracy == 0.0


@pytest.mark.slow
def test_fixed_batch_model_pads_short_batches(exported) -> None:
    fixed = exported("resnet18", batch=2).output
    result = run_scenario(fixed, ScenarioOptions(scenario="singlestream", **SHORT))
    assert result.max_batch == 2 and result.mean_batch_size == 1 and result.queries >= 4
    with pytest.raises(InputError, match="fixed batch of 2; use a largest batch of 2") as raised:
        run_scenario(fixed, ScenarioOptions(scenario="offline", max_batch=8, **SHORT))
    assert raised.value.options == ("max_batch",)


@pytest.mark.slow
def test_offline_pads_its_last_short_batch_to_the_warmed_size(r18: Path) -> None:
    """Seven samples in batches of 3: the last one is padded, so batch 1 never runs cold."""
    options = ScenarioOptions(
        scenario="offline", max_batch=3, target_qps=1, min_duration_s=1.0, min_queries=7
    )
    result = run_scenario(r18, options)
    assert result.samples_per_query == 7 and result.warmed_batch_sizes == [3]
    assert result.engine_batch_sizes == [3] and result.padded_batches == 1
    assert result.mean_batch_size == pytest.approx(7 / 3)  # real samples, padding not counted


@pytest.mark.slow
def test_multistream_warms_each_size_its_query_splits_into(r18: Path) -> None:
    result = run_scenario(r18, ScenarioOptions(scenario="multistream", max_batch=3, **SHORT))
    assert result.warmed_batch_sizes == [2, 3] and result.engine_batch_sizes == [2, 3]
    assert result.padded_batches == 0


@pytest.mark.slow
def test_an_inference_error_ends_the_run_instead_of_hanging(r18: Path, monkeypatch) -> None:
    real = OrtRunner.infer

    def fails_under_loadgen(self, feed):
        if threading.current_thread().name.startswith("sut-worker"):  # not in calibration
            raise RuntimeError("CUDA out of memory")
        return real(self, feed)

    monkeypatch.setattr(OrtRunner, "infer", fails_under_loadgen)
    with pytest.raises(ResnetDeployError, match="inference failed during the LoadGen run: Runt"):
        run_scenario(r18, ScenarioOptions(scenario="singlestream", **SHORT))


@pytest.mark.slow
def test_find_peak_bisects_to_the_highest_valid_target(r18: Path, monkeypatch) -> None:
    """With 64 samples/s measured and targets VALID up to 10 QPS, bisection between 0 and 64
    goes 32 (INVALID), 16 (INVALID), 8 (VALID), 12 (INVALID): down after an INVALID step, up
    after a VALID one, and the highest VALID step is the result."""
    tried = []
    real_prepare = loadgen_module.prepare

    def measured_64_per_s(*args, **kwargs):
        prepared = real_prepare(*args, **kwargs)
        prepared.throughput_per_s = 64.0  # what calibration measured: the bisection's top
        return prepared

    def valid_up_to_10_qps(prepared, options, qps, logs, progress):
        tried.append(qps)
        reasons = [] if qps <= 10 else ["Performance constraints not satisfied"]
        return SimpleNamespace(
            valid=not reasons, invalid_reasons=reasons, samples_per_s=qps, p99_ms=1.0, notes=[]
        )

    monkeypatch.setattr(loadgen_module, "_run_test", valid_up_to_10_qps)
    monkeypatch.setattr(loadgen_module, "prepare", measured_64_per_s)
    options = ScenarioOptions(
        scenario="server", find_peak=True, peak_steps=4, latency_bound_ms=1e4, min_queries=4
    )
    calls = []
    result = run_scenario(r18, options, progress=lambda *call: calls.append(call))
    assert tried == [32.0, 16.0, 8.0, 12.0]
    assert [call[1:] for call in calls if len(call) == 3] == [(i, 4) for i in range(5)]
    assert [s.target_qps for s in result.peak_search] == tried
    assert [s.valid for s in result.peak_search] == [False, False, True, False]
    assert result.valid and result.samples_per_s == 8.0
    assert any("highest VALID target QPS" in note for note in result.notes)

    too_many = replace(options, min_queries=10**6)  # every step would take hours
    with pytest.raises(ResnetDeployError, match=r"nothing to search: below .* QPS one step"):
        run_scenario(r18, too_many)
    tried.clear()
    no_time = replace(too_many, peak_budget_s=3600.0)  # a budget, not 60 s, limits a step
    with pytest.raises(ResnetDeployError, match=r"nothing to search: a step at .* past the b"):
        run_scenario(r18, no_time)
    assert tried == []


class RecordingLoadGen:
    """LoadGen's two calls a SUT makes, keeping every sample id answered."""

    def __init__(self) -> None:
        self.answered: list[int] = []
        self.lock = threading.Lock()

    def QuerySampleResponse(self, sample_id: int, pointer: int, size: int) -> int:
        return sample_id

    def QuerySamplesComplete(self, responses: list[int]) -> None:
        with self.lock:
            self.answered += responses


class SlowRunner:
    """An OrtRunner's place and infer: 10 ms a batch, each batch's size and span recorded."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, float, float]] = []

    def place(self, array: np.ndarray) -> np.ndarray:
        return array

    def infer(self, array: np.ndarray) -> list[np.ndarray]:
        begin = time.monotonic()
        time.sleep(0.01)
        self.batches.append((len(array), begin, time.monotonic()))
        return [np.zeros((len(array), 10), np.float32)]


def test_instances_take_batches_from_one_queue_at_once() -> None:
    """Two runners behind one queue: both serve, at the same time, every sample exactly once."""
    library = SampleLibrary(Preprocessing(4, (0, 0, 0), (1, 1, 1)), np.dtype("float32"), None, 8)
    library.load(list(range(8)))
    lg, runners = RecordingLoadGen(), [SlowRunner(), SlowRunner()]
    sut = BatchingSut(lg, library, runners, max_batch=4, timeout_s=0.002, pad_to=None)
    samples = [SimpleNamespace(id=1000 + i, index=i % 8) for i in range(60)]
    with sut.serving():
        for start in range(0, 60, 3):  # faster than one runner serves: a backlog forms
            sut.issue_queries(samples[start : start + 3])
            time.sleep(0.002)
    assert sorted(lg.answered) == [s.id for s in samples]
    ran = [batch for runner in runners for batch in runner.batches]
    assert all(runner.batches for runner in runners)
    assert sum(size for size, _, _ in ran) == sut.samples == 60
    assert len(ran) == sut.batches and max(size for size, _, _ in ran) <= 4
    first, second = runners
    assert any(a < d and c < b for _, a, b in first.batches for _, c, d in second.batches)


@pytest.mark.slow
def test_server_runs_each_instance_on_its_own_session(small: Path, monkeypatch) -> None:
    """LoadGen's queries, served by two sessions in two worker threads; what ran adds up."""
    real, ran = OrtRunner.infer, []

    def recording(self, feed):
        begin = time.monotonic()
        out = real(self, feed)
        worker = threading.current_thread().name
        if worker.startswith("sut-worker"):  # not calibration
            ran.append((id(self), worker, len(next(iter(feed.values()))), begin, time.monotonic()))
        return out

    monkeypatch.setattr(OrtRunner, "infer", recording)
    engine = BenchOptions(threads=1, baseline="none")
    options = ScenarioOptions(
        scenario="server",
        engine=engine,
        instances=2,
        max_batch=1,
        target_qps=400,
        latency_bound_ms=5000.0,
        **SHORT,
    )
    result = run_scenario(small, options)
    assert result.instances == 2 and result.threads == 1
    assert "2 instances x 1 threads" in format_result(result)
    sessions = {session: worker for session, worker, *_ in ran}
    assert len(sessions) == 2 and len(set(sessions.values())) == 2  # a worker per session
    assert sum(size for _, _, size, _, _ in ran) == result.queries  # one sample per query
    spans = {s: [(b, e) for session, _, _, b, e in ran if session == s] for s in sessions}
    first, second = spans.values()
    assert any(a < d and c < b for a, b in first for c, d in second)  # at the same time


def test_detail_log_gives_checks_advice_bullets_and_errors() -> None:
    log = parse_detail(SERVER_DETAIL)
    assert log.values["result_validity"] == "INVALID"
    assert log.number("result_completed_samples_per_sec") == 56.15
    assert log.number("result_99.00_percentile_latency_ns") == 1135102774
    assert log.number("loadgen_version") is None  # not a number
    assert log.checks() == {
        "Performance constraints satisfied": False,
        "Min duration satisfied": True,
        "Min queries satisfied": True,
        "Early stopping satisfied": False,
    }
    assert log.recommendations() == [
        "Reduce target QPS to improve latency.",
        "Increase the target QPS so the loadgen pre-generates more queries.",
    ]
    assert log.early_stopping()[-1] == (
        "Would need to run at least 8446 more queries, with the run being successful if "
        "every additional query were under latency."
    )
    assert log.errors == ["Too many outstanding queries"] and log.warnings == ["CAS failed."]


@pytest.mark.parametrize(
    ("options", "message", "named"),
    [
        (
            ScenarioOptions(scenario="burst"),
            "unknown scenario 'burst'; use singlestream",
            "scenario",
        ),
        (
            ScenarioOptions(scenario="server", target_qps=0),
            "the target QPS must be greater than 0",
            "target_qps",
        ),
        (
            ScenarioOptions(scenario="offline", find_peak=True),
            "use the server scenario",
            "find_peak scenario",
        ),
        (
            ScenarioOptions(accuracy=True),
            "the accuracy mode needs a labelled image folder",
            "accuracy images",
        ),
        (
            ScenarioOptions(official=True, min_duration_s=5),
            "MLPerf's official settings fix the duration",
            "official min_duration_s",
        ),
        (
            ScenarioOptions(engine=BenchOptions(batch_sizes=(1,), warmup_runs=0)),
            "belong to the latency loop",
            "batch_sizes warmup_runs",
        ),
        (ScenarioOptions(batch_timeout_ms=-1), "cannot be negative", "batch_timeout_ms"),
        (ScenarioOptions(instances=0), "the instance count must be greater than 0", "instances"),
        (
            ScenarioOptions(instances=2, endpoint=EndpointOptions("grpc://127.0.0.1:8001")),
            "instances are the in-process system's",
            "instances",
        ),
    ],
)
def test_bad_options_are_refused_before_any_work(
    options: ScenarioOptions, message: str, named: str
) -> None:
    """Each refusal names the concept in words and, as ``options``, the fields it concerns."""
    with pytest.raises(InputError, match=message.replace("(", r"\(")) as raised:
        check_scenario_options(options)
    assert "--" not in str(raised.value)
    assert raised.value.options == tuple(named.split())


def test_earlier_logs_are_kept_without_force(tmp_path: Path) -> None:
    (tmp_path / "mlperf_log_summary.txt").write_text("earlier run")
    with pytest.raises(InputError, match="holds LoadGen logs already"):
        check_scenario_options(ScenarioOptions(log_dir=tmp_path))
    check_scenario_options(ScenarioOptions(log_dir=tmp_path, force=True))


@pytest.mark.slow
def test_cli_json_record_and_one_line_errors(r18: Path) -> None:
    args = ["bench", r18, "--scenario", "singlestream", "--min-duration", 1, "--min-queries", 4]
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["scenario"] == "SingleStream" and record["mode"] == "PerformanceOnly"
    assert record["p99_ms"] > 0 and isinstance(record["valid"], bool)
    assert record["metadata"]["arch"] == "resnet18" and record["environment"]["cpu_model"]

    for bad, message in [
        (["--scenario", "burst"], "Error: --scenario: unknown scenario 'burst'"),
        (["--target-qps", "5"], "Error: --target-qps needs --scenario"),
    ]:
        failed = cli("bench", r18, *bad)
        assert failed.exit_code == 2, failed.output
        assert failed.output.startswith(message) and failed.output.count("\n") == 1
    failed = cli("bench", r18, "--instances", 2)
    assert failed.exit_code == 2 and failed.output.startswith("Error: --instances needs --scen")
    failed = cli("bench", r18, "--scenario", "server", "--target-qps", "-3")  # at parse time
    assert failed.exit_code == 2
    assert failed.output.endswith(
        "Error: Invalid value for '--target-qps': must be above 0, got -3\n"
    )


@pytest.mark.slow
def test_cli_server_with_two_instances(small: Path) -> None:
    args = ["bench", small, "--scenario", "server", "--instances", 2, "--threads", 1]
    args += ["--target-qps", 50, "--latency-bound-ms", 5000, "--min-duration", 1]
    result = cli(*args, "--min-queries", 4, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["scenario"] == "Server" and record["target_qps"] == 50
    assert (record["instances"], record["threads"]) == (2, 1) and record["queries"] >= 4


def mllog(key: str, value: object, *, error: bool = False, warning: bool = False) -> str:
    meta = {"is_error": error, "is_warning": warning, "file": "results.cc"}
    record = {"key": key, "value": value, "time_ms": 1.0, "metadata": meta}
    return ":::MLLOG " + json.dumps(record)


SERVER_DETAIL = "\n".join(
    [
        mllog("loadgen_version", "6.0.17 @ d6147c7eb7"),
        mllog("warning_generic_message", "CAS failed.", warning=True),
        mllog("error_runtime", "Too many outstanding queries", error=True),
        mllog("result_validity", "INVALID"),
        mllog("result_perf_constraints_met", False),
        mllog("result_min_duration_met", True),
        mllog("result_min_queries_met", True),
        mllog("early_stopping_met", False),
        mllog(
            "result_invalid_reason",
            "Reduce target QPS to improve latency. "
            "Increase the target QPS so the loadgen pre-generates more queries. ",
        ),
        mllog(
            "early_stopping_result",
            " * Run unsuccessful.  * Processed 65 queries.  * Would need to run at least 8446 "
            "more queries,  with the run being successful if every additional  query were "
            "under latency.",
        ),
        mllog("result_completed_samples_per_sec", 56.15),
        mllog("result_99.00_percentile_latency_ns", 1135102774),
        "not a record: LoadGen's detail log has only MLLOG lines, but a stray one is skipped",
    ]
)


def test_a_labels_file_that_is_not_utf8_is_one_line(tmp_path):
    from resnet_deploy.errors import InputError
    from resnet_deploy.perf.loadgen.samples import read_labels

    labels = tmp_path / "labels.txt"
    labels.write_bytes("caf\xe9.jpg\t3\n".encode("latin-1"))
    with pytest.raises(InputError) as raised:
        read_labels([], tmp_path, labels, 1000)
    assert str(raised.value) == (
        f"{labels}: labels file is not UTF-8 text (byte 0xe9 at offset 3); save it as UTF-8"
    )
