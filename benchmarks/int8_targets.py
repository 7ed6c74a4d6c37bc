"""The three int8 targets side by side on this CPU: speed and the accuracy guard's figures.

    python benchmarks/int8_targets.py [--arch resnet50] [--duration 10] [--warmup 3] [--out DIR]

Exports the model (random weights), makes one int8 file per ``--target`` with ``optimize`` (the
accuracy guard on, its min cosine and top-1 agreement recorded), benches fp32 and each file on
ONNX Runtime's CPU provider at batch 1 and 8 (``bench``, one file after the other), then again
interleaved (every file in turn, round after round, in one process: the fair comparison when
the machine is shared), and prints a Markdown table; with ``--out`` the table and the JSON
records are written there. The ``tensorrt`` row is a check of that file's
numerics on the CPU, not of TensorRT's speed. Whether this CPU has VNNI heads the table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from record import write_record

from resnet_deploy.convert.export import ExportOptions, export_model
from resnet_deploy.convert.quantize import OptimizeOptions, optimize_model
from resnet_deploy.perf.bench import bench
from resnet_deploy.perf.bench_options import BenchOptions, session_config
from resnet_deploy.runtime.int8target import TARGETS, cpu_flags, has_vnni
from resnet_deploy.runtime.providers import create_session


def measure(args: argparse.Namespace, folder: Path) -> tuple[list[dict], list]:
    fp32 = export_model(ExportOptions(output=folder / f"{args.arch}.onnx", arch=args.arch))
    files = {"fp32": (fp32.output, None)}
    for target in TARGETS:
        made = optimize_model(
            fp32.output,
            OptimizeOptions(
                precision="int8",
                target=target,
                guard_samples=args.guard_samples,
                output=folder / f"{args.arch}.int8.{target}.onnx",
            ),
        )
        files[f"int8 --target {target}"] = (made.output, made.guard)
    options = BenchOptions(
        batch_sizes=(1, 8), warmup_s=args.warmup, duration_s=args.duration, baseline="none"
    )
    rows, records = [], []
    for name, (path, guard) in files.items():
        print(f"... bench {name}", flush=True)
        report = bench(path, options)
        records.append({"file": name, "bench": report, "guard": guard})
        cosine = min(s.errors.min_cosine_similarity for s in guard.shapes) if guard else 1.0
        top1 = min(s.errors.top1_agreement for s in guard.shapes) if guard else 1.0
        for batch in report.batches:
            rows.append(
                {
                    "file": name,
                    "batch": batch.batch_size,
                    "p50_ms": batch.p50_ms,
                    "images_per_s": batch.images_per_s,
                    "min_cosine": cosine,
                    "min_top1_agreement": top1,
                    "warnings": report.warnings,
                }
            )
    paths = {name: path for name, (path, _) in files.items()}
    for batch, median_ms in interleaved(paths, args.rounds).items():
        for row in rows:
            if row["batch"] == batch:
                row["interleaved_p50_ms"] = median_ms[row["file"]]
    return rows, records


def interleaved(paths: dict[str, Path], rounds: int) -> dict[int, dict[str, float]]:
    """Median ms per file and batch size, every file timed in turn in each round."""
    sessions = {
        name: create_session(path, session_config("cpu", BenchOptions()))
        for name, path in paths.items()
    }
    medians = {}
    for batch, runs in ((1, 5), (8, 2)):
        feed = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for session in sessions.values():
            session.run(None, {session.get_inputs()[0].name: feed})  # warm-up
        for _ in range(rounds):
            for name, session in sessions.items():
                inputs = {session.get_inputs()[0].name: feed}
                for _ in range(runs):
                    start = time.perf_counter()
                    session.run(None, inputs)
                    times[name].append(time.perf_counter() - start)
        medians[batch] = {name: 1000 * statistics.median(t) for name, t in times.items()}
    return medians


def table(rows: list[dict], note: str) -> str:
    vnni = has_vnni(cpu_flags())
    lines = [
        f"CPU VNNI: {'yes' if vnni else 'no' if vnni is False else 'unknown'}. {note}".strip(),
        "",
        "| file | batch | bench p50 ms | images/s | interleaved p50 ms | guard min cosine "
        "| guard min top-1 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['file']} | {r['batch']} | {r['p50_ms']:.1f} | {r['images_per_s']:.1f} "
            f"| {r['interleaved_p50_ms']:.1f} "
            f"| {r['min_cosine']:.4f} | {r['min_top1_agreement']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--duration", type=float, default=10.0, help="timed s per batch")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up s per batch")
    parser.add_argument("--guard-samples", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--note", default="", help="conditions, e.g. 'quiet machine'")
    parser.add_argument("--out", type=Path, help="folder for int8-targets.md and .json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        rows, records = measure(args, Path(work))
    text = table(rows, args.note) + "\n"
    if args.out:
        write_record(args.out / "int8-targets", text, records)
    else:
        print(text)


if __name__ == "__main__":
    main()
