"""int8 on the CPU: ONNX Runtime against OpenVINO on the same file, and where the gap is.

    python benchmarks/int8_gap.py [--rounds 10] [--duration 3] [--runs 200] [--note "quiet"]
    python benchmarks/int8_gap.py --arch resnet18 --rounds 1 --duration 0.5 --runs 5  # check

Exports ResNet50 (torchvision variant, random weights) and makes two int8 files with
`optimize`: as it ships (exact fp32 rewrites first: GlobalAveragePool, stem channels 3 -> 4)
and without the rewrites. At batch 1 and 8 it times each file on ONNX Runtime and OpenVINO in
alternating short rounds (A B A B ...: a slow minute on a shared machine hits all of them),
then profiles the shipped file with both engines and groups the per-layer times into the parts
of the network where they differ. Writes ``benchmarks/results/<date>-int8-gap.md`` and
``.json``; every timed loop carries other processes' CPU use, and rows timed while the machine
was busy are marked.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from record import log, write_record

from resnet_deploy.convert.export import ExportOptions, export_model
from resnet_deploy.convert.quantize import OptimizeOptions, optimize_model
from resnet_deploy.environment import Environment, describe_environment
from resnet_deploy.perf.bench import BenchOptions, bench
from resnet_deploy.perf.profile import LayerTime, ProfileOptions, ProfileReport, profile_model

RESULTS = Path(__file__).resolve().parent / "results"
BATCH_SIZES = (1, 8)


@dataclass
class Timing:
    """One file at one batch: every round's p50 for both engines."""

    file: str
    batch_size: int
    ort_p50_ms: list[float] = field(default_factory=list)
    openvino_p50_ms: list[float] = field(default_factory=list)
    ort_images_per_s: list[float] = field(default_factory=list)
    openvino_images_per_s: list[float] = field(default_factory=list)
    busy_rounds: int = 0  # rounds timed while other processes were busy
    min_cosine: float | None = None


def kernel_sizes(model: Path) -> dict[str, int]:
    """Module -> its conv's kernel height, from the fp32 file's weights."""
    weights = onnx.load(str(model)).graph.initializer
    return {
        t.name.removesuffix(".weight"): t.dims[2]
        for t in weights
        if t.name.endswith(".weight") and len(t.dims) == 4
    }


def part_of(layer: LayerTime, kernels: dict[str, int]) -> str:
    """The part of a ResNet a layer belongs to, where the study found the engines differ."""
    name = layer.layer
    if name == "conv1":
        return "stem conv"
    if name.endswith(" add"):
        return "residual adds (ORT: QLinearAdd; OpenVINO: fused into convs)"
    if name.startswith("layer4.") and layer.gop is not None:
        return "layer4 convs (7x7 outputs)"
    if name in kernels:
        size = kernels[name]
        return f"layer1-3 {size}x{size} convs"
    return "everything else (pools, fc, quantize, layout)"


def gap_table(report: ProfileReport, kernels: dict[str, int]) -> list[tuple[str, float, float]]:
    parts: dict[str, list[float]] = {}
    for layer in report.layers:
        totals = parts.setdefault(part_of(layer, kernels), [0.0, 0.0])
        totals[0] += layer.ms
        totals[1] += layer.openvino_ms or 0.0
    return [(part, ort, ov) for part, (ort, ov) in parts.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet50", help="resnet18 checks the script quickly")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds per batch")
    parser.add_argument("--duration", type=float, default=3.0, help="timed seconds per loop")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per loop")
    parser.add_argument("--runs", type=int, default=200, help="profiled runs per batch")
    parser.add_argument("--note", default="")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    env = describe_environment()
    timings: list[Timing] = []
    profiles: list[ProfileReport] = []
    with tempfile.TemporaryDirectory() as folder:
        fp32 = export_model(
            ExportOptions(output=Path(folder) / f"{args.arch}.onnx", arch=args.arch), progress=log
        ).output
        files = {}
        for name, rewrite in (("optimize (rewrites)", True), ("without rewrites", False)):
            output = Path(folder) / f"{args.arch}.{'rw' if rewrite else 'plain'}.int8.onnx"
            options = OptimizeOptions(precision="int8", output=output, rewrite=rewrite)
            result = optimize_model(fp32, options, progress=log)
            cosine = min(s.errors.min_cosine_similarity for s in result.guard.shapes)
            files[name] = (output, cosine)
        for batch in BATCH_SIZES:
            rows = {name: Timing(name, batch, min_cosine=cos) for name, (_, cos) in files.items()}
            for round_ in range(args.rounds):
                for name, (path, _) in files.items():
                    log(f"batch {batch}, round {round_ + 1}/{args.rounds}: {name}")
                    options = BenchOptions(
                        batch_sizes=(batch,),
                        warmup_s=args.warmup,
                        duration_s=args.duration,
                        baseline="none",
                        compare="openvino",
                    )
                    (b,) = bench(path, options).batches
                    row = rows[name]
                    row.ort_p50_ms.append(b.p50_ms)
                    row.ort_images_per_s.append(b.images_per_s)
                    row.openvino_p50_ms.append(b.openvino_p50_ms)
                    row.openvino_images_per_s.append(b.openvino_images_per_s)
                    row.busy_rounds += not b.ratios_reliable
            timings += rows.values()
            shipped = files["optimize (rewrites)"][0]
            log(f"batch {batch}: profiling both engines, {args.runs} runs")
            options = ProfileOptions(batch_size=batch, runs=args.runs, compare="openvino")
            profiles.append(profile_model(shipped, options))
        kernels = kernel_sizes(fp32)
    when = datetime.date.today().isoformat()
    text = markdown(timings, profiles, kernels, env, when, args)
    stem = args.output_dir / f"{when}-int8-gap"
    record = {"date": when, "note": args.note, "timings": timings, "profiles": profiles}
    write_record(stem, text, record)


def markdown(
    timings: list[Timing],
    profiles: list[ProfileReport],
    kernels: dict[str, int],
    env: Environment,
    when: str,
    args: argparse.Namespace,
) -> str:
    lines = [
        f"# int8 {args.arch} on the CPU: ONNX Runtime and OpenVINO on the same file, {when}",
        "",
        "| file | batch | ORT p50 ms | OpenVINO p50 ms | ORT/OV time | ORT images/s | "
        "OV images/s | min cosine | busy rounds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in timings:
        ort, ov = statistics.median(t.ort_p50_ms), statistics.median(t.openvino_p50_ms)
        lines.append(
            f"| {t.file} | {t.batch_size} | {ort:.2f} | {ov:.2f} | {ort / ov:.3f} | "
            f"{statistics.median(t.ort_images_per_s):.1f} | "
            f"{statistics.median(t.openvino_images_per_s):.1f} | {t.min_cosine:.4f} | "
            f"{t.busy_rounds}/{len(t.ort_p50_ms)} |"
        )
    for report in profiles:
        lines += [
            "",
            f"## Where the time goes, batch {report.batch_size} (profiled, {report.runs} runs)",
            "",
            "| part | ONNX Runtime ms | OpenVINO ms | ORT - OV ms |",
            "|---|---:|---:|---:|",
        ]
        for part, ort, ov in gap_table(report, kernels):
            lines.append(f"| {part} | {ort:.2f} | {ov:.2f} | {ort - ov:+.2f} |")
        busy = " (UNRELIABLE: machine busy)" if report.contention.unreliable else ""
        lines.append(
            f"\nGraph ONNX Runtime ran: every Conv and Add quantized, no float islands: "
            f"{report.graph.fused}. Peak {report.peak.kind}: {report.peak.gops_per_s:.0f} "
            f"GOP/s{busy}."
        )
    lines += [
        "",
        f"- {env.cpu_model}, {env.physical_cores} physical cores; "
        + ", ".join(f"{k} {v}" for k, v in env.packages.items()),
        f"- p50 per round is the median of a {args.duration} s loop; the table gives the median "
        f"over {args.rounds} alternating rounds; threads = physical cores for both engines, "
        "OpenVINO with the LATENCY hint",
        "- busy rounds: other processes used over 10% of the cores while the round was timed",
    ]
    if args.note:
        lines.append(f"- note: {args.note}")
    lines += ["", "Reproduce: `python benchmarks/int8_gap.py`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
