"""``resnet-deploy optimize``: an fp16 or int8 model, guarded against the eager fp32 model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from resnet_deploy.cli.options import (
    COUNT,
    MODEL_FILE,
    force_option,
    given,
    json_option,
    output_option,
    samples_option,
)
from resnet_deploy.cli.output import finish, reporting, writes
from resnet_deploy.model.metadata import INT8_TARGETS


def default_output(options: dict[str, Any]) -> Path:
    from resnet_deploy.convert.quantize import default_output

    return default_output(options["model"], options["precision"])


@click.command("optimize")
@click.argument("model", type=MODEL_FILE)
@click.option(
    "--precision", type=click.Choice(["fp16", "int8"]), required=True, help="Target precision."
)
@click.option(
    "--calibration",
    default="random",
    show_default=True,
    help="int8: 'random' inputs, or a folder of images (ImageNet preprocessing).",
)
@samples_option("Calibration inputs [default: 32].")
@click.option(
    "--method",
    type=click.Choice(["minmax", "entropy", "percentile"]),
    help="int8 calibration method [default: minmax].",
)
@click.option("--per-channel/--per-tensor", default=True, show_default=True)
@click.option(
    "--target",
    type=click.Choice(INT8_TARGETS),
    default="cpu",
    show_default=True,
    help="int8: the machine it will run on (cpu: x86 with VNNI; cpu-avx2: older x86; tensorrt).",
)
@click.option("--exclude", default="", help="Comma-separated nodes or modules to keep in float.")
@output_option("Output file [default: MODEL.PRECISION.onnx].")
@force_option("Overwrite an existing output file.")
@click.option("--no-guard", is_flag=True, help="Write the model without the accuracy guard.")
@click.option("--guard-samples", type=COUNT, help="Held-out inputs per shape [default: 16].")
@json_option()
@writes(
    ["output", "json_out"],
    inputs=["model", "calibration"],
    defaults={"output": default_output},
)
def command(
    model: Path,
    exclude: str,
    no_guard: bool,
    force: bool,
    json_out: str | None,
    **options: Any,
) -> None:
    """Make an fp16 or int8 model, checked against the eager fp32 model before it is written.

    \b
    Examples:
      resnet-deploy optimize resnet50.onnx --precision int8
      resnet-deploy optimize resnet50.onnx --precision int8 --calibration imgs/ --exclude conv1,fc
      resnet-deploy optimize resnet50.onnx --precision int8 --target tensorrt
      resnet-deploy optimize resnet50.onnx --precision fp16 -o resnet50.fp16.onnx
    """
    from resnet_deploy.convert.quantize import (
        GuardFailed,
        OptimizeOptions,
        format_result,
        optimize_model,
    )

    chosen = OptimizeOptions(
        exclude=tuple(name.strip() for name in exclude.split(",") if name.strip()),
        guard=not no_guard,
        force=force,
        **given(**options),
    )
    try:
        with reporting(json_out) as progress:
            result = optimize_model(model, chosen, progress=progress)
    except GuardFailed as failed:  # the guard's numbers are the report; the error its last line
        finish(failed.result, json_out, force, text=format_result, err=True, error=failed)
    else:
        finish(result, json_out, force, text=format_result)
