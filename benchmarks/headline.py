"""The project's headline table: PyTorch eager against ONNX Runtime, measured on this machine.

    python benchmarks/headline.py [--duration 10] [--warmup 3] [--note "quiet machine"]

Exports ResNet50 (torchvision variant, random weights), benches it at batch 1 and 8 on the CPU,
and on CUDA where CUDA really starts, with eager PyTorch timed in the same run, and writes
``benchmarks/results/<date>-<cpu|gpu>.md`` and ``.json``. Each row is one (precision, runtime,
batch); a new precision is one more entry in PRECISIONS. Ratios are what to compare between
machines; absolute times are this machine's.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from resnet_deploy.bench import BenchOptions, BenchReport, bench
from resnet_deploy.environment import Environment, describe_environment
from resnet_deploy.errors import ProviderError
from resnet_deploy.export import ExportOptions, export_model
from resnet_deploy.files import write_text_atomic
from resnet_deploy.report import to_json

PRECISIONS: dict[str, dict] = {"fp32": {}}  # precision -> ExportOptions fields
PROVIDERS = ("cpu", "cuda")
BATCH_SIZES = (1, 8)
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Row:
    precision: str
    runtime: str
    batch_size: int
    p50_ms: float
    p90_ms: float
    images_per_s: float
    vs_eager: float  # throughput over eager PyTorch's, same batch, same device, same run


def log(step: str) -> None:
    print(f"... {step}", file=sys.stderr, flush=True)


def measure(warmup_s: float, duration_s: float) -> tuple[list[BenchReport], list[str]]:
    reports, notes = [], []
    with tempfile.TemporaryDirectory() as folder:
        for precision, fields in PRECISIONS.items():
            output = Path(folder) / f"resnet50-{precision}.onnx"
            model = export_model(ExportOptions(output=output, **fields), progress=log).output
            for provider in PROVIDERS:
                options = BenchOptions(
                    provider=provider,
                    batch_sizes=BATCH_SIZES,
                    warmup_s=warmup_s,
                    duration_s=duration_s,
                )
                try:
                    reports.append(bench(model, options, progress=log))
                except ProviderError as exc:
                    notes.append(f"{provider}: not measured ({exc})")
    return reports, notes


def rows_of(report: BenchReport) -> list[Row]:
    precision = report.metadata.precision
    device = "CPU" if report.provider == "CPUExecutionProvider" else "GPU"
    rows = []
    for b in report.batches:
        if b.error is not None or b.speedup_vs_torch is None:
            continue
        eager = Row(
            precision,
            f"PyTorch eager ({device})",
            b.batch_size,
            b.torch_p50_ms,
            b.torch_p90_ms,
            b.torch_images_per_s,
            1.0,
        )
        ort = Row(
            precision,
            f"ONNX Runtime {report.provider.removesuffix('ExecutionProvider')}",
            b.batch_size,
            b.p50_ms,
            b.p90_ms,
            b.images_per_s,
            b.speedup_vs_torch,
        )
        rows += [eager, ort]
    return rows


def markdown(
    rows: list[Row],
    reports: list[BenchReport],
    notes: list[str],
    env: Environment,
    when: str,
    note: str,
) -> str:
    lines = [
        f"# resnet-deploy headline: ResNet50 (torchvision, random weights), {when}",
        "",
        "| precision | runtime | batch | p50 ms | p90 ms | images/s | vs eager |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.precision} | {r.runtime} | {r.batch_size} | {r.p50_ms:.1f} | {r.p90_ms:.1f} | "
            f"{r.images_per_s:.1f} | {r.vs_eager:.2f}x |"
        )
    first = reports[0] if reports else None
    lines += [
        "",
        f"- CPU: {env.cpu_model}, {env.physical_cores} physical cores ({env.logical_cpus} logical)",
        f"- GPU: {'; '.join(env.gpus) or 'none'}",
        f"- threads: {first.threads if first else '-'} (ONNX Runtime intra-op and torch), "
        f"spinning {'on' if first and first.spinning else 'off'}, graph optimization all",
        f"- {env.platform}, Python {env.python}, "
        + ", ".join(f"{name} {version}" for name, version in env.packages.items()),
        "- p50/p90: per-run latency; images/s: batch x runs / wall time of the timed loop; "
        "vs eager: throughput over eager PyTorch, same batch, same device, same run",
    ]
    if first:
        o = first.options
        lines.append(f"- warm-up {o.warmup_s} s and timed loop {o.duration_s} s per batch size")
    lines += [f"- {text}" for text in notes]
    for report in reports:
        for b in report.batches:
            lines += [f"- {report.provider} batch {b.batch_size}: {w}" for w in b.warnings]
    if note:
        lines.append(f"- note: {note}")
    lines += ["", "Reproduce: `python benchmarks/headline.py`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per batch")
    parser.add_argument("--duration", type=float, default=10.0, help="timed seconds per batch")
    parser.add_argument("--note", default="", help="context worth keeping (machine load, ...)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    env = describe_environment()
    reports, notes = measure(args.warmup, args.duration)
    rows = [row for report in reports for row in rows_of(report)]
    when = datetime.date.today().isoformat()
    text = markdown(rows, reports, notes, env, when, args.note)
    stem = args.output_dir / f"{when}-{'gpu' if env.gpus else 'cpu'}"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    record = {"date": when, "note": args.note, "rows": rows, "notes": notes, "reports": reports}
    write_text_atomic(stem.with_suffix(".md"), text)
    write_text_atomic(stem.with_suffix(".json"), to_json(record))
    print(text)
    print(f"wrote {stem}.md and {stem}.json", file=sys.stderr)


if __name__ == "__main__":
    main()
