"""How a bench result is shown: the terminal table (shared with ``bench --url``) and the plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnet_deploy.errors import InputError
from resnet_deploy.perf.bench import BatchResult, BenchReport
from resnet_deploy.report.records import format_table

# The columns every latency table starts with (`bench` and `bench --url`)
LATENCY_HEADERS = (
    "batch",
    "runs",
    "mean ms",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "cv",
    "images/s",
)


def write_plot(report: BenchReport, path: Path, *, replace: bool = False) -> None:
    """Latency percentiles and throughput against batch size, one PNG, written atomically."""
    from resnet_deploy.report.charts import EAGER, OPENVINO, ORT, Series, Style, bench_png

    done = [b for b in report.batches if b.error is None]
    if not done:
        raise InputError("nothing to plot: every batch size failed")
    sizes = [b.batch_size for b in done]

    def series(label: str, name: str, style: Style) -> Series:
        return Series(label, sizes, [getattr(b, name) for b in done], style)

    percentiles = (("p50_ms", "-", "o"), ("p90_ms", "-.", "v"), ("p99_ms", ":", "^"))
    latency = [
        series(f"ORT {name[:3]}", name, Style(ORT.color, dash, marker))
        for name, dash, marker in percentiles
    ]
    throughput = [series(report.provider, "images_per_s", ORT)]
    if all(b.openvino_runs for b in done):
        latency.append(series("OV p50", "openvino_p50_ms", OPENVINO))
        throughput.append(series("OpenVINO", "openvino_images_per_s", OPENVINO))
    if all(b.torch_runs for b in done):
        latency.append(series("eager p50", "torch_p50_ms", EAGER))
        throughput.append(series("PyTorch eager", "torch_images_per_s", EAGER))
    unreliable = any(not b.ratios_reliable for b in done)
    bench_png(
        path,
        latency=latency,
        throughput=throughput,
        sizes=sizes,
        title=f"{report.model.name} ({report.metadata.arch}, {report.input_dtype}) on "
        f"{report.provider}, {report.threads} threads, {report.environment.cpu_model}",
        warning="UNRELIABLE: other processes were busy while timing" if unreliable else "",
        replace=replace,
    )


def summary(report: BenchReport) -> str:
    """The terminal report: what ran where, one row per batch size, then warnings and errors."""
    env, meta = report.environment, report.metadata
    lines = [
        f"{report.model}: {meta.arch} ({meta.variant}), {meta.precision}, "
        f"input {report.input_dtype}, "
        f"sha256 {report.model_sha256[:12]}",
        f"{report.provider}, {report.threads} threads, spinning {_on(report.spinning)}, "
        f"IO binding {_on(report.io_binding)}, graph optimization {report.graph_optimization}",
        f"{env.cpu_model}, {env.physical_cores} physical cores"
        + "".join(f"; {gpu}" for gpu in env.gpus),
    ]
    used = {name: opts for name, opts in report.provider_options.items() if opts}
    if used:
        lines.append(f"provider options: {used}")
    if report.placement is not None:
        lines.append(report.placement.summary())
    if report.eager_baseline:
        lines.append(f"baseline: {report.eager_baseline}")
    if report.openvino:
        lines.append(f"compared with {report.openvino}, same file, batch and threads")
    headers = list(LATENCY_HEADERS)
    eager = report.options.baseline == "torch"
    if eager:
        headers += ["eager p50 ms", "eager images/s", "speed-up"]
    openvino = report.options.compare == "openvino"
    if openvino:
        headers += ["openvino p50 ms", "openvino images/s", "ort/openvino"]

    def beside(b: BatchResult) -> list[Any]:
        row = []
        if eager:
            row += [b.torch_p50_ms, b.torch_images_per_s, _ratio(b.speedup_vs_torch, b)]
        if openvino:
            row += [b.openvino_p50_ms, b.openvino_images_per_s, _ratio(b.speedup_vs_openvino, b)]
        return row

    rows, notes = latency_rows(report.batches, beside)
    if rows:
        lines += ["", format_table(headers, rows)]
    if any(not b.ratios_reliable for b in report.batches):
        notes.append("* ratios measured while other processes were busy: UNRELIABLE")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def latency_rows(
    batches: list[BatchResult], beside: Callable[[BatchResult], list[Any]]
) -> tuple[list[list[Any]], list[str]]:
    """A table row per measured batch (the latency columns, then ``beside``'s) and a note per
    warning and failure: the table `bench` and `bench --url` both print."""
    rows, notes = [], []
    for b in batches:
        notes += [f"batch {b.batch_size}: {text}" for text in b.warnings]
        if b.error is not None:
            notes.append(f"batch {b.batch_size}: failed: {b.error}")
            continue
        row = [b.batch_size, b.runs, b.mean_ms, b.p50_ms, b.p90_ms, b.p99_ms, b.max_ms, b.cv]
        row += [b.images_per_s, *beside(b)]
        rows.append(["-" if value is None else value for value in row])
    return rows, notes


def _ratio(value: float | None, result: BatchResult) -> str | None:
    """A speed-up for the table, starred where the machine was busy while it was measured."""
    if value is None:
        return None
    return f"{value:.2f}x" + ("" if result.ratios_reliable else "*")


def _on(flag: bool) -> str:
    return "on" if flag else "off"
