"""LoadGen's verdict and figures, read back from its logs, and the terminal report."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from resnet_deploy.environment import describe_environment
from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.perf.loadgen.logs import DetailLog, read_accuracy_log, read_detail
from resnet_deploy.perf.loadgen.options import (
    MLPERF_MODEL,
    OVERLOAD_FACTOR,
    PERCENTILE_FIELDS,
    ScenarioOptions,
    ScenarioResult,
)
from resnet_deploy.perf.loadgen.prepare import Prepared
from resnet_deploy.perf.loadgen.sut import Sut
from resnet_deploy.report.records import format_table


def read_result(
    prepared: Prepared,
    options: ScenarioOptions,
    logs: Path,
    settings: Any,
    target_qps: float | None,
    sut: Sut,
) -> ScenarioResult:
    """The result as LoadGen's detail log states it, with what the SUT ran."""
    detail = read_detail(logs)
    values = detail.values
    scenario = prepared.scenario
    # MultiStream's figures are per query (LoadGen's summary states the same ones)
    per_query = scenario == "MultiStream"
    latency = "_query_latency_ns" if per_query else "_latency_ns"
    percentile = "_percentile_per_query_latency_ns" if per_query else "_percentile_latency_ns"
    samples_per_query = values.get("effective_samples_per_query")
    mean_ns = detail.number(f"result_mean{latency}")
    samples_per_s = detail.number(
        "result_completed_samples_per_sec" if scenario == "Server" else "result_samples_per_second"
    )
    if samples_per_s is None and mean_ns and samples_per_query:
        samples_per_s = samples_per_query * 1e9 / mean_ns
    headline = metric_ms = None  # the scenario's own metric: SingleStream's p90, MultiStream's p99
    target = detail.number("effective_target_latency_percentile")
    if scenario in ("SingleStream", "MultiStream") and target:
        headline = 100 * target
        metric_ms = _ms(detail.number(f"result_{headline:.2f}{percentile}"))
    estimate = next(
        (
            float(m[1])
            for line in detail.early_stopping()
            if (m := re.search(r"percentile estimate: (\d+)", line))
        ),
        None,
    )
    bound_ns = detail.number("effective_target_latency_ns")
    model = prepared.model
    result = ScenarioResult(
        model=model.path if model is not None else None,
        model_sha256=model.sha256 if model is not None else "",
        metadata=model.metadata if model is not None else None,
        provider=prepared.provider,
        threads=prepared.threads,
        input_dtype=prepared.library.dtype.name,
        scenario=scenario,
        mode=values.get("effective_test_mode", str(settings.mode).rpartition(".")[2]),
        official=options.official,
        # AccuracyOnly has no performance verdict: valid means LoadGen reported no error
        valid=not detail.errors if options.accuracy else values.get("result_validity") == "VALID",
        invalid_reasons=[],
        samples_per_s=samples_per_s,
        latency_metric_ms=metric_ms,
        latency_metric_percentile=headline,
        early_stopping_estimate_ms=_ms(estimate),
        target_qps=target_qps if scenario in ("Server", "Offline") else None,
        latency_bound_ms=bound_ns / 1e6 if scenario == "Server" and bound_ns else None,
        samples_per_query=samples_per_query,
        queries=values.get("result_query_count"),
        min_ms=_ms(detail.number(f"result_min{latency}")),
        mean_ms=_ms(mean_ns),
        max_ms=_ms(detail.number(f"result_max{latency}")),
        min_duration_ms=values.get("effective_min_duration_ms"),
        min_query_count=values.get("effective_min_query_count"),
        instances=prepared.instances,
        max_batch=prepared.max_batch,
        batch_timeout_ms=prepared.timeout_s * 1e3,
        mean_batch_size=sut.samples / sut.batches if sut.batches else None,
        warmed_batch_sizes=prepared.warmed,
        engine_batch_sizes=sorted(sut.shapes),
        padded_batches=sut.padded,
        endpoint=prepared.endpoint,
        concurrency=prepared.concurrency,
        sample_source=prepared.source,
        sample_count=prepared.library.count,
        early_stopping=detail.early_stopping(),
        recommendations=detail.recommendations(),
        loadgen_errors=detail.errors,
        loadgen_warnings=detail.warnings,
        loadgen_version=str(values.get("loadgen_version", "")),
        environment=describe_environment(),
    )
    for level, name in PERCENTILE_FIELDS.items():
        setattr(result, name, _ms(detail.number(f"result_{level}{percentile}")))
    result.invalid_reasons = _invalid_reasons(result, detail)
    arch = result.metadata.arch if result.metadata else None
    if options.official and arch != MLPERF_MODEL:
        result.notes.append(
            f"--official applies MLPerf's {MLPERF_MODEL} settings to this {arch or 'model'}"
        )
    return result


def _ms(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e6


def _invalid_reasons(result: ScenarioResult, detail: DetailLog) -> list[str]:
    """Why LoadGen said INVALID, in its own words, with the figures its checks compared."""
    if result.valid:
        return []
    reasons = []
    for check, satisfied in detail.checks().items():
        if satisfied:
            continue
        reason = check.replace("satisfied", "not satisfied")
        if check.startswith("Performance") and result.latency_bound_ms and result.p99_ms:
            reason += f" (p99 {result.p99_ms:.1f} ms, bound {result.latency_bound_ms:g} ms)"
        elif check.startswith("Min duration") and result.min_duration_ms:
            reason += f" (minimum {result.min_duration_ms / 1e3:g} s)"
        elif check.startswith("Min queries") and result.min_query_count:
            reason += f" (minimum {result.min_query_count})"
        elif check.startswith("Early stopping") and result.early_stopping:
            reason += ": " + " ".join(result.early_stopping)
        reasons.append(reason)
    reasons += [f"LoadGen recommends: {text}" for text in result.recommendations]
    for text in result.loadgen_errors:
        if "Too many outstanding queries" in text and not result.official:
            text += (
                f" (quick Server runs stop once the backlog would take over {OVERLOAD_FACTOR}x "
                "the latency bound to serve: the target QPS is beyond this system)"
            )
        reasons.append(f"LoadGen error: {text}")
    return reasons or ["LoadGen's detail log says INVALID without a reason"]


def accuracy(result: ScenarioResult, prepared: Prepared, logs: Path, sut: Sut) -> None:
    """Top-1 from LoadGen's accuracy log, which must agree with what the SUT sent."""
    logged = read_accuracy_log(logs / "mlperf_log_accuracy.json")
    if logged != sut.predictions:
        raise ResnetDeployError(
            f"LoadGen's accuracy log ({len(logged)} samples) disagrees with the "
            f"{len(sut.predictions)} responses the SUT sent"
        )
    labels = prepared.labels or []
    if set(logged) != set(range(len(labels))):
        raise ResnetDeployError(
            f"LoadGen's accuracy log covers {len(logged)} of the {len(labels)} samples"
        )
    correct = sum(logged[index] == label for index, label in enumerate(labels))
    result.top1_accuracy = correct / len(labels)
    result.accuracy_samples = len(labels)


def format_result(result: ScenarioResult) -> str:
    """The terminal report: what ran where, LoadGen's verdict and why, then the numbers."""
    settings = "MLPerf's official settings" if result.official else "quick settings"
    lines = [
        _subject(result),
        f"LoadGen {result.loadgen_version.split()[0] if result.loadgen_version else ''}: "
        f"{result.scenario}, {result.mode}, {settings}; samples: {result.sample_source}",
        f"Result: {_verdict(result)}",
    ]
    lines += [f"  - {reason}" for reason in result.invalid_reasons]
    if result.peak_search:
        rows = [
            [s.target_qps, "VALID" if s.valid else "INVALID", s.samples_per_s, s.p99_ms, s.reason]
            for s in result.peak_search
        ]
        headers = ["target QPS", "result", "samples/s", "p99 ms", "why"]
        lines += ["", format_table(headers, [[_cell(v) for v in row] for row in rows])]
    rows = [
        ["target QPS", result.target_qps],
        ["latency bound ms (p99)", result.latency_bound_ms],
        ["samples/s", result.samples_per_s],
        [
            f"p{result.latency_metric_percentile:g} latency ms"
            if result.latency_metric_percentile
            else "scenario latency ms",
            result.latency_metric_ms,
        ],
        ["early-stopping estimate ms", result.early_stopping_estimate_ms],
        ["top-1 accuracy", result.top1_accuracy],
        ["accuracy samples", result.accuracy_samples],
        ["queries", result.queries],
        ["samples per query", result.samples_per_query],
        [
            "mean request (max batch)" if result.endpoint else "mean batch (max, timeout ms)",
            _batching(result),
        ],
        ["batch sizes run (padded batches)", _shapes(result)],
        *[
            [name.replace("_", ".").removesuffix(".ms") + " ms", getattr(result, name)]
            for name in ("min_ms", "mean_ms", *PERCENTILE_FIELDS.values(), "max_ms")
        ],
    ]
    lines += ["", format_table(["measure", "value"], [r for r in rows if r[1] is not None])]
    notes = result.notes + [f"LoadGen warning: {w}" for w in result.loadgen_warnings]
    if result.log_dir is not None:
        notes.append(f"LoadGen's logs: {result.log_dir}")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def _subject(result: ScenarioResult) -> str:
    """What was measured: the file in process, or the served model (described by its file)."""
    meta = result.metadata
    model = f"{meta.arch} ({meta.variant}), " if meta is not None else ""
    if result.endpoint is None:
        where = f"{result.provider}, {result.threads} threads"
        if result.instances and result.instances > 1:
            where = f"{result.provider}, {result.instances} instances x {result.threads} threads"
        return f"{result.model}: {model}{result.input_dtype}, {where}"
    described = f" (preprocessing from {result.model})" if result.model is not None else ""
    return (
        f"{result.endpoint}: {model}{result.input_dtype}, {result.provider}, "
        f"{result.concurrency} requests in flight at most{described}"
    )


def _verdict(result: ScenarioResult) -> str:
    if result.top1_accuracy is not None:
        return f"top-1 {result.top1_accuracy:.2%} of {result.accuracy_samples} (AccuracyOnly)"
    return "VALID" if result.valid else "INVALID"


def _batching(result: ScenarioResult) -> str | None:
    if result.mean_batch_size is None:
        return None
    if result.endpoint is not None:  # the server forms its own batches, without our timeout
        return f"{result.mean_batch_size:.2f} ({result.max_batch})"
    return f"{result.mean_batch_size:.2f} ({result.max_batch}, {result.batch_timeout_ms:g})"


def _shapes(result: ScenarioResult) -> str | None:
    if not result.engine_batch_sizes:
        return None
    return f"{', '.join(map(str, result.engine_batch_sizes))} ({result.padded_batches})"


def _cell(value: Any) -> Any:
    return "-" if value is None else value
