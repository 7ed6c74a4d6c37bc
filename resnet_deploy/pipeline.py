"""The main job in one call: export, verify, bench; every artifact in one folder.

Benchmarking a file that does not compute what the eager model computes would produce a
number about the wrong model, so a failed verification stops the run before the bench.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from resnet_deploy.bench import BenchOptions, BenchReport, bench, write_plot
from resnet_deploy.bench import summary as bench_summary
from resnet_deploy.errors import InputError
from resnet_deploy.export import ExportOptions, ExportResult, export_model, format_result
from resnet_deploy.files import check_output_folder, write_text_atomic
from resnet_deploy.report import to_json, write_csv
from resnet_deploy.verify import VerifyOptions, VerifyReport, format_report, verify
from resnet_deploy.weights import RANDOM

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
    force: bool = False


@dataclass
class RunReport:
    folder: Path
    export: ExportResult
    verify: VerifyReport
    bench: BenchReport | None = None  # None when verification failed
    artifacts: list[Path] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verify.passed and self.bench is not None


def run_pipeline(
    options: RunOptions, progress: Callable[[str], None] = lambda step: None
) -> RunReport:
    """Export to ``folder/model.onnx``, verify it, bench it, and write the reports beside it."""
    weights = [options.weights] if options.weights != RANDOM else []
    folder = prepare_folder(options.folder, force=options.force, inputs=weights)
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
        progress=lambda step: progress(f"export: {step}"),
    )
    checked = verify(
        model,
        VerifyOptions(provider=options.provider),
        progress=lambda step: progress(f"verify: {step}"),
    )
    report = RunReport(folder=folder, export=exported, verify=checked, artifacts=[model])
    if checked.passed:
        report.bench = bench(
            model,
            BenchOptions(
                provider=options.provider,
                batch_sizes=options.batch_sizes,
                duration_s=options.duration_s,
                baseline=options.baseline,
            ),
            progress=lambda step: progress(f"bench: {step}"),
        )
        write_csv(report.bench.batches, folder / "bench.csv")
        write_plot(report.bench, folder / "bench.png")
        report.artifacts += [folder / "bench.csv", folder / "bench.png"]
    report.artifacts += [folder / "report.json", folder / "report.txt"]
    write_text_atomic(folder / "report.json", to_json(report))
    write_text_atomic(folder / "report.txt", format_run(report) + "\n")
    return report


def prepare_folder(folder: Path, *, force: bool, inputs: list[Path | str] = ()) -> Path:
    """A fresh artifacts folder: an existing non-empty one is only replaced with ``force``,
    and never when an input (the weights) lies inside it."""
    folder = check_output_folder(Path(folder), force=force, inputs=inputs)
    if folder.is_dir() and any(folder.iterdir()):
        if not force:
            raise InputError(f"{folder}: already holds files (pass --force to replace them)")
        shutil.rmtree(folder)
    folder.mkdir(exist_ok=True)
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
    sections += [
        "",
        f"artifacts in {report.folder}/: " + ", ".join(p.name for p in report.artifacts),
    ]
    return "\n".join(sections)
