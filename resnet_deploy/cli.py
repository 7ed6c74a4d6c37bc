"""The ``resnet-deploy`` command: parse, call one library function, print."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from resnet_deploy import __version__
from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.model import ARCHS, VARIANTS
from resnet_deploy.report import format_table, write_json


class ToolError(click.ClickException):
    """A library error as a one-line message with the error's own exit code."""

    def __init__(self, error: ResnetDeployError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code


class Group(click.Group):
    """Turns library errors and Ctrl-C into clean exits; ``--debug`` shows the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ResnetDeployError as exc:
            if ctx.meta.get("debug"):
                raise
            raise ToolError(exc) from None
        except KeyboardInterrupt:
            if ctx.meta.get("debug"):
                raise
            click.echo("\nInterrupted; nothing was written.", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="resnet-deploy")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """PyTorch ResNet to production through ONNX: export, verify, benchmark.

    \b
    Example:
      resnet-deploy export -o resnet50.onnx
    """
    ctx.meta["debug"] = debug


def json_option(help_text: str = "Write the result as one JSON record to FILE (- for stdout)."):
    return click.option(
        "--json",
        "json_out",
        is_flag=False,
        flag_value="-",
        default=None,
        metavar="[FILE]",
        help=help_text,
    )


def parse_batch(value: str) -> int | None:
    if value == "dynamic":
        return None
    try:
        batch = int(value)
    except ValueError:
        raise click.BadParameter(f"expected 'dynamic' or a whole number, got {value!r}") from None
    if batch < 1:
        raise click.BadParameter(f"batch size must be at least 1, got {batch}")
    return batch


def emit_json(record: Any, destination: str | None) -> None:
    if destination is not None:
        text = write_json(record, destination)
        if text is not None:
            click.echo(text, nl=False)


def progress(step: str) -> None:
    click.echo(f"... {step}", err=True)


@main.command()
@click.option("--arch", type=click.Choice(ARCHS), default="resnet50", show_default=True)
@click.option("--variant", type=click.Choice(VARIANTS), default="torchvision", show_default=True)
@click.option(
    "--weights",
    default="random",
    show_default=True,
    help="'random' (seeded by --seed) or a .pth/.pt/.safetensors state dict.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random weights.")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option(
    "--batch",
    default="dynamic",
    show_default=True,
    help="'dynamic' for a dynamic batch axis, or a fixed batch size.",
)
@click.option("--image-size", type=int, default=224, show_default=True)
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim.")
@click.option(
    "--exporter",
    type=click.Choice(["dynamo", "torchscript"]),
    default="dynamo",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output file [default: ARCH.onnx].",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@json_option()
def export(
    arch: str,
    variant: str,
    weights: str,
    seed: int,
    opset: int,
    batch: str,
    image_size: int,
    no_simplify: bool,
    exporter: str,
    output: Path | None,
    force: bool,
    json_out: str | None,
) -> None:
    """Export a ResNet to one simplified, self-describing ONNX file.

    \b
    Examples:
      resnet-deploy export -o resnet50.onnx
      resnet-deploy export --variant seed --weights tutorial.pth -o seed.onnx
      resnet-deploy export --arch resnet18 --batch 8 --json
    """
    from resnet_deploy.export import ExportOptions, export_model

    options = ExportOptions(
        output=output or Path(f"{arch}.onnx"),
        arch=arch,
        variant=variant,
        weights=weights,
        seed=seed,
        opset=opset,
        batch=parse_batch(batch),
        image_size=image_size,
        simplify=not no_simplify,
        exporter=exporter,
        force=force,
    )
    result = export_model(options, progress=progress)
    emit_json(result, json_out)
    if json_out == "-":
        return  # stdout holds the JSON record alone
    click.echo(f"wrote {result.output} ({result.file_bytes / 1e6:.1f} MB)")
    for note in result.notes:
        click.echo(f"weights: {note}")
    meta = result.metadata
    weights_desc = f"random, seed {meta.seed}" if meta.seed is not None else meta.weights
    click.echo(
        f"{meta.arch} ({meta.variant}), weights {weights_desc}, opset {meta.opset}, "
        f"batch {meta.batch}, input {meta.input_name} [N,3,{meta.image_size},{meta.image_size}], "
        f"{result.parameters:,} parameters"
    )
    click.echo()
    click.echo(format_table(["step", "seconds"], list(result.step_seconds.items())))
    click.echo()
    ops = sorted(set(result.ops_exported) | set(result.ops_final))
    rows = [[op, result.ops_exported.get(op, 0), result.ops_final.get(op, 0)] for op in ops]
    rows.append(["total", sum(result.ops_exported.values()), sum(result.ops_final.values())])
    click.echo(format_table(["op", "exported", "final"], rows))
