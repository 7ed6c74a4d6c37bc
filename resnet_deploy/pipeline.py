"""The main job in one call: export, verify, bench (and optimize to int8); every artifact,
the HTML page among them, in one folder.

Benchmarking a file that does not compute what the eager model computes would produce a
number about the wrong model, so a failed verification stops the run before the bench.
Verification localizes layer by layer, so the page can show where a failing file departs.
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from resnet_deploy.check.verify import VerifyOptions, VerifyReport, format_report, verify
from resnet_deploy.convert.export import ExportOptions, ExportResult, export_model, format_result
from resnet_deploy.convert.quantize import (
    GuardFailed,
    OptimizeOptions,
    OptimizeResult,
    optimize_model,
)
from resnet_deploy.convert.quantize import format_result as format_optimize
from resnet_deploy.environment import Environment, describe_environment
from resnet_deploy.errors import InputError
from resnet_deploy.files import check_output_folder, staged_folder, write_text_atomic
from resnet_deploy.model.onnxfile import read_model
from resnet_deploy.model.weights import RANDOM
from resnet_deploy.perf.bench import BenchOptions, BenchReport, bench
from resnet_deploy.perf.bench_output import summary as bench_summary
from resnet_deploy.perf.bench_output import write_plot
from resnet_deploy.report.page import PAGE_NAME, render_page
from resnet_deploy.report.records import to_json, to_record, write_csv
from resnet_deploy.steps import Progress, no_progress, prefixed

DEFAULT_FOLDER = Path("resnet-deploy-run")


@dataclass(frozen=True)
class RunOptions:
    folder: Path = DEFAULT_FOLDER
    arch: str = "resnet50"
    variant: str = "torchvision"
    weights: str = RANDOM
    seed: int = 0
    image_size: int = 224
    provider: str = "cpu"
    batch_sizes: tuple[int, ...] = (1, 8)
    duration_s: float | None = None  # per batch size; None: bench's default
    baseline: str = "torch"
    int8: bool = False  # also quantize to int8 (guarded) and bench that file
    force: bool = False


@dataclass
class RunReport:
    folder: Path
    export: ExportResult
    verify: VerifyReport
    bench: BenchReport | None = None  # None when verification failed
    artifacts: list[Path] = field(default_factory=list)
    command: str = ""  # the run as a command line, every option spelled out
    model_sha256: str = ""  # of model.onnx, so a shared page names the exact file
    environment: Environment | None = None
    optimize: OptimizeResult | None = None  # with --int8; its output is None if the guard failed
    int8_bench: BenchReport | None = None

    @property
    def passed(self) -> bool:
        int8_ok = self.optimize is None or self.optimize.output is not None
        return self.verify.passed and self.bench is not None and int8_ok


def run_pipeline(options: RunOptions, progress: Progress = no_progress) -> RunReport:
    """Export to ``folder/model.onnx``, verify it, bench it, and write the reports beside it.

    Everything is made in a temporary folder beside ``folder`` and renamed onto it at the end,
    so the folder is the whole run or nothing: an interrupted run leaves nothing, and of two
    runs into one folder at once, one is refused rather than both writing into it.
    """
    weights = [options.weights] if options.weights != RANDOM else []
    folder = prepare_folder(options.folder, force=options.force, inputs=weights)
    with staged_folder(folder, replace=options.force) as staging:
        report = _run_in(staging, options, progress)
        _relocate(report, staging, folder)
        report.artifacts += [folder / name for name in ("report.json", "report.txt", PAGE_NAME)]
        write_text_atomic(staging / "report.json", to_json(report))
        write_text_atomic(staging / "report.txt", format_run(report) + "\n")
        write_text_atomic(staging / PAGE_NAME, render_page(to_record(report), staging))
    return report


def _run_in(folder: Path, options: RunOptions, progress: Progress) -> RunReport:
    model = folder / "model.onnx"
    exported = export_model(
        ExportOptions(
            output=model,
            arch=options.arch,
            variant=options.variant,
            weights=options.weights,
            seed=options.seed,
            image_size=options.image_size,
        ),
        progress=prefixed(progress, "export"),
    )
    exported_file = read_model(model)  # once: verify, bench and the records share it
    checked = verify(
        exported_file,
        VerifyOptions(provider=options.provider, localize=True),
        progress=prefixed(progress, "verify"),
    )
    report = RunReport(
        folder=folder,
        export=exported,
        verify=checked,
        artifacts=[model],
        command=command_line(options),
        model_sha256=exported_file.sha256,
        environment=describe_environment(),
    )
    if checked.passed:
        timing = BenchOptions(
            provider=options.provider,
            batch_sizes=options.batch_sizes,
            duration_s=options.duration_s,
            baseline=options.baseline,
        )
        report.bench = bench(exported_file, timing, progress=prefixed(progress, "bench"))
        write_csv(report.bench.batches, folder / "bench.csv")
        write_plot(report.bench, folder / "bench.png")
        report.artifacts += [folder / "bench.csv", folder / "bench.png"]
        if options.int8:
            run_int8(report, timing, progress)
    return report


def _relocate(value: Any, staging: Path, folder: Path) -> None:
    """Point every path the results hold into ``staging`` at ``folder``, where the files will
    be once the folder is renamed into place, so the records name the real files."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, Path) and item.is_relative_to(staging):
                value[index] = folder / item.relative_to(staging)
            else:
                _relocate(item, staging, folder)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field_ in dataclasses.fields(value):
            item = getattr(value, field_.name)
            if isinstance(item, Path) and item.is_relative_to(staging):
                object.__setattr__(value, field_.name, folder / item.relative_to(staging))
            else:
                _relocate(item, staging, folder)


def run_int8(report: RunReport, timing: BenchOptions, progress: Progress) -> None:
    """Quantize the verified file, and bench the result unless the accuracy guard refused it.

    The int8 bench skips the eager baseline: it is the same eager model the fp32 bench timed.
    """
    source = report.folder / "model.onnx"
    try:
        report.optimize = optimize_model(
            source,
            OptimizeOptions(precision="int8", output=report.folder / "model.int8.onnx"),
            progress=prefixed(progress, "optimize"),
        )
    except GuardFailed as failed:
        report.optimize = failed.result
        return
    quantized = report.optimize.output
    report.int8_bench = bench(
        quantized,
        replace(timing, baseline="none"),
        progress=prefixed(progress, "bench int8"),
    )
    write_csv(report.int8_bench.batches, report.folder / "bench.int8.csv")
    report.artifacts += [quantized, report.folder / "bench.int8.csv"]


def command_line(options: RunOptions) -> str:
    """``resnet-deploy run`` with every option spelled out, so the page says how to redo it."""
    words = ["resnet-deploy", "run", "--arch", options.arch, "--variant", options.variant]
    words += ["--weights", options.weights, "--seed", str(options.seed)]
    words += ["--image-size", str(options.image_size), "--provider", options.provider]
    words += ["--batch-sizes", ",".join(map(str, options.batch_sizes))]
    if options.duration_s is not None:
        words += ["--duration", f"{options.duration_s:g}"]
    words += ["--baseline", options.baseline, "-o", str(options.folder)]
    words += ["--int8"] * options.int8 + ["--force"] * options.force
    return shlex.join(words)


def prepare_folder(folder: Path, *, force: bool, inputs: list[Path | str] = ()) -> Path:
    """Check the artifacts folder before any work: an existing non-empty one is only replaced
    with ``force`` (at the end, when the new one is whole), and never when an input (the
    weights) lies inside it."""
    folder = check_output_folder(Path(folder), inputs=inputs)
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise InputError(f"{folder}: already holds files (force replaces them)")
    return folder


def format_run(report: RunReport) -> str:
    sections = [
        "== export ==",
        format_result(report.export),
        "",
        "== verify ==",
        format_report(report.verify),
        "",
        "== bench ==",
    ]
    if report.bench is None:
        sections.append(f"skipped: verification failed: {report.verify.summary()}")
    else:
        sections.append(bench_summary(report.bench))
    if report.optimize is not None:
        sections += ["", "== optimize: int8 ==", format_optimize(report.optimize)]
        if report.int8_bench is not None:
            sections += ["", "== bench: int8 ==", bench_summary(report.int8_bench)]
    sections += [
        "",
        f"artifacts in {report.folder}/: " + ", ".join(p.name for p in report.artifacts),
    ]
    return "\n".join(sections)
