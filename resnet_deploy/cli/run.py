"""``resnet-deploy run``: export, verify and bench in one go, into one folder with a page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from resnet_deploy.cli.options import (
    OUTPUT_FOLDER,
    baseline_option,
    batch_sizes_option,
    duration_option,
    force_option,
    given,
    json_option,
    model_options,
    provider_option,
)
from resnet_deploy.cli.output import finish, reporting, writes


def default_folder() -> Path:
    from resnet_deploy.pipeline import DEFAULT_FOLDER

    return DEFAULT_FOLDER


@click.command("run")
@model_options
@provider_option
@batch_sizes_option("Comma-separated batch sizes to bench [default: 1,8].")
@duration_option("Timed seconds per batch size.")
@baseline_option("Also time PyTorch eager.", default="torch")
@click.option(
    "-o",
    "--out",
    "folder",
    type=OUTPUT_FOLDER,
    help="Folder for model.onnx and the reports [default: resnet-deploy-run].",
)
@force_option("Replace a folder that already holds files.")
@click.option(
    "--int8", is_flag=True, help="Also quantize to int8 (guarded), bench it, compare with fp32."
)
@json_option()
@writes(
    ["json_out"],
    folders=["folder"],
    inputs=["weights"],
    defaults={"folder": lambda options: default_folder()},
)
def command(json_out: str | None, force: bool, **options: Any) -> None:
    """Export, verify and bench in one go, with every artifact in one folder, and a page
    (FOLDER/report.html) that shows it all.

    Stops before the bench (exit 1) when the export does not verify.

    \b
    Examples:
      resnet-deploy run
      resnet-deploy run --variant seed --weights tutorial.pth -o seed-run
      resnet-deploy run --provider cuda --batch-sizes 1,32
      resnet-deploy run --int8
    """
    from resnet_deploy.pipeline import RunOptions, format_run, run_pipeline

    with reporting(json_out) as progress:
        report = run_pipeline(RunOptions(force=force, **given(**options)), progress=progress)
    finish(report, json_out, force, text=format_run, failed=not report.passed)
