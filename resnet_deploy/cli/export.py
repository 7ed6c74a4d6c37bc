"""``resnet-deploy export``: a PyTorch ResNet to one simplified, self-describing ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from resnet_deploy.cli.options import (
    BATCH,
    Number,
    force_option,
    given,
    json_option,
    model_options,
    output_option,
)
from resnet_deploy.cli.output import finish, reporting, writes
from resnet_deploy.model.metadata import MAX_BATCH


def parse_batch(ctx: click.Context, param: click.Parameter, value: str) -> int | None:
    """``dynamic`` (None: a dynamic batch axis) or a fixed batch size."""
    if value == "dynamic":
        return None
    try:
        return BATCH.convert(value, None, None)
    except click.BadParameter:
        raise click.BadParameter(
            f"expected 'dynamic' or a whole number from 1 to {MAX_BATCH}, got {value!r}"
        ) from None


@click.command("export")
@model_options
@click.option("--opset", type=Number(int, 1, 1000), help="ONNX opset [default: 18].")
@click.option(
    "--batch",
    default="dynamic",
    show_default=True,
    callback=parse_batch,
    help="'dynamic' for a dynamic batch axis, or a fixed batch size.",
)
@click.option(
    "--dynamic-size",
    is_flag=True,
    help="Dynamic height and width too (torchvision variant; --image-size is the example).",
)
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim.")
@click.option(
    "--exporter",
    type=click.Choice(["dynamo", "torchscript"]),
    default="dynamo",
    show_default=True,
)
@output_option("Output file [default: ARCH.onnx].")
@force_option("Overwrite an existing output file.")
@json_option()
@writes(
    ["output", "json_out"],
    inputs=["weights"],
    defaults={"output": lambda options: Path(f"{options['arch']}.onnx")},
)
def command(
    output: Path,
    opset: int | None,
    no_simplify: bool,
    force: bool,
    json_out: str | None,
    **options: Any,
) -> None:
    """Export a ResNet to one simplified, self-describing ONNX file.

    \b
    Examples:
      resnet-deploy export -o resnet50.onnx
      resnet-deploy export --variant seed --weights tutorial.pth -o seed.onnx
      resnet-deploy export --arch resnet18 --batch 8 --json
      resnet-deploy export --dynamic-size -o any-size.onnx
    """
    from resnet_deploy.convert.export import ExportOptions, export_model, format_result

    chosen = ExportOptions(
        output=output, simplify=not no_simplify, force=force, **options, **given(opset=opset)
    )
    with reporting(json_out) as progress:
        result = export_model(chosen, progress=progress)
    finish(result, json_out, force, text=format_result)
