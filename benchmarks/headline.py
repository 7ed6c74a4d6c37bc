"""The project's headline table: PyTorch eager against ONNX Runtime, measured on this machine.

    python benchmarks/headline.py [--duration 10] [--warmup 3] [--note "quiet machine"]

Exports ResNet50 (torchvision variant, random weights), makes its int8 (and, for CUDA, fp16)
models with `optimize`, verifies each against eager fp32, benches each at batch 1 and 8 on the
CPU and on CUDA where CUDA really starts, with eager PyTorch timed in the same run, and writes
``benchmarks/results/<date>-<cpu|gpu>.md`` and ``.json``. Each row is one (precision, runtime,
batch), its speed beside its accuracy, and where that accuracy was checked: an fp16 file
checked on the CPU (no CUDA) is a check of its rounded weights only, as the CPU provider
computes fp16 files in fp32. CUDA fp32 runs with TF32 on, ONNX Runtime's default, and is both
timed and verified that way (verify's tf32 tolerance). Ratios are what to compare between
machines; absolute times are this machine's.
"""

from __future__ import annotations

import argparse
import datetime
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from record import log, write_record

from resnet_deploy.check.verify import VerifyOptions, VerifyReport, verify
from resnet_deploy.convert.export import ExportOptions, export_model
from resnet_deploy.convert.quantize import OptimizeOptions, optimize_model
from resnet_deploy.environment import Environment, describe_environment
from resnet_deploy.errors import ProviderError
from resnet_deploy.perf.bench import BenchOptions, BenchReport, bench

# precision -> the providers it is benched on. fp16 is a GPU format: ONNX Runtime's CPU
# provider runs most of it through casts, which says nothing about fp16.
PRECISIONS: dict[str, tuple[str, ...]] = {
    "fp32": ("cpu", "cuda"),
    "int8": ("cpu",),
    "fp16": ("cuda",),
}
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
    vs_eager: float  # throughput over eager PyTorch fp32's, same batch, same device, same run
    vs_fp32: float  # throughput over ONNX Runtime fp32's, same batch, same provider, same run
    min_cosine: float  # of the logits against eager fp32, over the verification's inputs
    top1_agreement: float
    checked: str  # the provider the accuracy was checked on, and its scope
    reliable: bool = True  # False: other processes were busy while this batch was timed


@dataclass
class Measured:
    bench: BenchReport
    check: VerifyReport


def measure(
    warmup_s: float, duration_s: float, arch: str = "resnet50"
) -> tuple[list[Measured], list[str]]:
    """Every precision on every provider it is meant for; eager is timed once, beside fp32."""
    measured, notes, unavailable = [], [], set()
    with tempfile.TemporaryDirectory() as folder:
        options = ExportOptions(output=Path(folder) / f"{arch}.onnx", arch=arch)
        fp32 = export_model(options, progress=log)
        for precision, providers in PRECISIONS.items():
            for provider in providers:
                if provider in unavailable:
                    notes.append(f"{precision} on {provider}: not measured (see above)")
                    continue
                options = BenchOptions(
                    provider=provider,
                    batch_sizes=BATCH_SIZES,
                    warmup_s=warmup_s,
                    duration_s=duration_s,
                    baseline="torch" if precision == "fp32" else "none",
                    compare="openvino" if provider == "cpu" and openvino_installed() else None,
                )
                try:
                    model, check = prepare(fp32.output, precision, provider)
                    measured.append(Measured(bench(model, options, progress=log), check))
                except ProviderError as exc:
                    unavailable.add(provider)
                    notes.append(f"{precision} on {provider}: not measured ({exc})")
    return measured, notes


def openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def prepare(fp32: Path, precision: str, provider: str) -> tuple[Path, VerifyReport]:
    """The model file for ``precision`` and its verification against eager fp32."""
    if precision == "fp32":  # with TF32 on CUDA, as bench times it (ONNX Runtime's default)
        options = VerifyOptions(provider=provider, allow_tf32=provider == "cuda")
        return fp32, verify(fp32, options, progress=log)
    result = optimize_model(fp32, OptimizeOptions(precision=precision, force=True), progress=log)
    return result.output, result.guard


def rows_of(item: Measured, measured: list[Measured]) -> list[Row]:
    """Eager fp32 (beside fp32 only) and ONNX Runtime rows, ratios against the same run's."""
    report, check = item.bench, item.check
    precision = report.metadata.precision
    fp32 = next(
        m.bench
        for m in measured
        if m.bench.metadata.precision == "fp32" and m.bench.provider == report.provider
    )
    baseline = {b.batch_size: b for b in fp32.batches if b.error is None}
    cosine = min(s.errors.min_cosine_similarity for s in check.shapes)
    top1 = min(s.errors.top1_agreement for s in check.shapes)
    checked = check.provider.removesuffix("ExecutionProvider")
    if check.tf32:
        checked += ", TF32"
    if precision == "fp16" and check.provider == "CPUExecutionProvider":
        checked += ", weights only"
    device = "CPU" if report.provider == "CPUExecutionProvider" else "GPU"
    runtime = f"ONNX Runtime {report.provider.removesuffix('ExecutionProvider')}"
    rows = []
    for b in report.batches:
        base = baseline.get(b.batch_size)
        if b.error is not None or base is None or base.torch_images_per_s is None:
            continue
        eager_ips = base.torch_images_per_s
        if precision == "fp32":
            eager = (base.torch_p50_ms, base.torch_p90_ms, eager_ips)
            rows.append(
                Row(
                    "fp32",
                    f"PyTorch eager ({device})",
                    b.batch_size,
                    *eager,
                    1.0,
                    float("nan"),
                    1.0,
                    1.0,
                    "-",
                )
            )
        rows.append(
            Row(
                precision,
                runtime,
                b.batch_size,
                b.p50_ms,
                b.p90_ms,
                b.images_per_s,
                b.images_per_s / eager_ips,
                b.images_per_s / base.images_per_s,
                cosine,
                top1,
                checked,
                b.ratios_reliable and base.ratios_reliable,
            )
        )
        if b.openvino_runs:  # the same file, batch and threads, timed in the same run
            rows.append(
                Row(
                    precision,
                    f"OpenVINO CPU ({report.openvino.split(', ')[-1]})",
                    b.batch_size,
                    b.openvino_p50_ms,
                    b.openvino_p90_ms,
                    b.openvino_images_per_s,
                    b.openvino_images_per_s / eager_ips,
                    b.openvino_images_per_s / base.images_per_s,
                    cosine,
                    top1,
                    checked,
                    b.ratios_reliable and base.ratios_reliable,
                )
            )
    return rows


def markdown(
    rows: list[Row],
    measured: list[Measured],
    notes: list[str],
    env: Environment,
    when: str,
    note: str,
    arch: str = "ResNet50",
) -> str:
    lines = [
        f"# resnet-deploy headline: {arch} (torchvision, random weights), {when}",
        "",
        "| precision | runtime | batch | p50 ms | p90 ms | images/s | vs eager | vs ORT fp32 "
        "| min cosine | top-1 agree | checked on |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r.batch_size, "eager" not in r.runtime, r.precision)):
        star = "" if r.reliable else "*"
        vs_fp32 = "-" if math.isnan(r.vs_fp32) else f"{r.vs_fp32:.2f}x{star}"
        lines.append(
            f"| {r.precision} | {r.runtime} | {r.batch_size} | {r.p50_ms:.1f} | {r.p90_ms:.1f} | "
            f"{r.images_per_s:.1f} | {r.vs_eager:.2f}x{star} | {vs_fp32} | {r.min_cosine:.4f} | "
            f"{r.top1_agreement:.2f} | {r.checked} |"
        )
    first = measured[0].bench if measured else None
    if not all(r.reliable for r in rows):
        lines[1:1] = [
            "",
            "**UNRELIABLE: other processes used the cores while rows marked * were timed; their "
            "ratios are not this machine's. Rerun on a quiet machine.**",
        ]
    lines += [
        "",
        f"- CPU: {env.cpu_model}, {env.physical_cores} physical cores ({env.logical_cpus} logical)",
        f"- GPU: {'; '.join(env.gpus) or 'none'}",
        f"- threads: {first.threads if first else '-'} (ONNX Runtime intra-op and torch), "
        f"spinning {'on' if first and first.spinning else 'off'}, graph optimization all",
        f"- {env.platform}, Python {env.python}, "
        + ", ".join(f"{name} {version}" for name, version in env.packages.items()),
        "- p50/p90: per-run latency; images/s: batch x runs / wall time of the timed loop; "
        "vs eager: throughput over eager PyTorch fp32, same batch, same device, same run; "
        "vs ORT fp32: over ONNX Runtime fp32 on the same provider; OpenVINO rows: the same "
        "file, batch and threads (LATENCY hint, its own inference precision)",
        "- min cosine, top-1 agree: the logits against eager fp32 on verify's held-out random "
        "inputs (batches 1, 2, 7); int8 is static QDQ (u8 activations, per-channel s8 weights, "
        "minmax on 32 random inputs). Random weights leave top logits nearly tied, so top-1 "
        "agreement is far lower than a trained network's",
        "- checked on: the provider the accuracy was verified on; CUDA fp32 is timed and "
        "verified with TF32 on (ONNX Runtime's default), against the tf32 tolerance; fp16 "
        "checked on the CPU is a check of its rounded weights only (the CPU provider computes "
        "fp16 files in fp32)",
    ]
    lines += [
        f"- eager baseline beside {m.bench.provider}: {m.bench.eager_baseline}"
        for m in measured
        if m.bench.eager_baseline
    ]
    if first:
        o = first.options
        lines.append(f"- warm-up {o.warmup_s} s and timed loop {o.duration_s} s per batch size")
    lines += [f"- {text}" for text in notes]
    for item in measured:
        report = item.bench
        lines += [
            f"- {report.metadata.precision} on {report.provider} batch {b.batch_size}: {w}"
            for b in report.batches
            for w in b.warnings
        ]
    if note:
        lines.append(f"- note: {note}")
    lines += ["", "Reproduce: `python benchmarks/headline.py`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per batch")
    parser.add_argument("--duration", type=float, default=10.0, help="timed seconds per batch")
    parser.add_argument("--arch", default="resnet50", help="resnet18 checks the script quickly")
    parser.add_argument("--note", default="", help="context worth keeping (machine load, ...)")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    env = describe_environment()
    measured, notes = measure(args.warmup, args.duration, args.arch)
    rows = [row for item in measured for row in rows_of(item, measured)]
    when = datetime.date.today().isoformat()
    text = markdown(rows, measured, notes, env, when, args.note, args.arch)
    stem = args.output_dir / f"{when}-{'gpu' if env.gpus else 'cpu'}"
    record = {"date": when, "note": args.note, "rows": rows, "notes": notes, "runs": measured}
    write_record(stem, text, record)


if __name__ == "__main__":
    main()
