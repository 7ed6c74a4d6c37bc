"""``resnet-deploy predict``: classify images with an ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from resnet_deploy.cli.options import (
    MODEL_FILE,
    batch_size_option,
    force_option,
    json_option,
    provider_option,
    top_option,
)
from resnet_deploy.cli.output import finish, reporting, writes

EXIT_BAD_INPUT = 2  # as for any bad input, but only after the good images are printed


@click.command("predict")
@click.argument("model", type=MODEL_FILE)
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@top_option("Classes.")
@provider_option
@batch_size_option("Images per run [default: 8, or fixed].")
@json_option()
@force_option("Overwrite an existing JSON file.")
@writes(["json_out"], inputs=["model", "images"])
def command(
    model: Path, images: tuple[str, ...], json_out: str | None, force: bool, **options: Any
) -> None:
    """Classify images: each one's most likely ImageNet classes, with probabilities.

    IMAGE is a file, a folder (searched recursively) or a glob pattern, quoted or not.
    Unreadable images are named on stderr and skipped; the exit code is then 2.

    \b
    Examples:
      resnet-deploy predict resnet50.onnx cat.jpg dog.png
      resnet-deploy predict resnet50.onnx photos/ 'more/*.jpg' --top 3
      resnet-deploy predict resnet50-int8.onnx photos/ --json predictions.json
    """
    from resnet_deploy.predict import PredictOptions, format_predictions, predict

    with reporting(json_out) as progress:
        report = predict(model, images, PredictOptions(**options), progress=progress)
    errors = [f"error: {error.error}" for error in report.errors]
    if errors:
        total = len(report.predictions) + len(report.errors)
        errors.append(f"{len(report.errors)} of {total} inputs failed")
    finish(
        report,
        json_out,
        force,
        text=lambda r: format_predictions(r) if r.predictions else None,
        notes=errors,
        failed=bool(report.errors),
        exit_code=EXIT_BAD_INPUT,
    )
