"""``resnet-deploy tune``: the configuration to deploy under a p99 bound."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from resnet_deploy.cli.options import (
    COUNT,
    MODEL_FILE,
    OUTPUT_FILE,
    POSITIVE,
    Number,
    force_option,
    json_option,
    max_batch_option,
    plot_option,
    provider_option,
)
from resnet_deploy.cli.output import finish, reporting, writes

SECONDS = Number(float, 0, 24 * 3600, low_open=True)  # up to a day


@click.command("tune")
@click.argument("model", type=MODEL_FILE)
@click.option(
    "--int8",
    type=MODEL_FILE,
    help="The int8 file `optimize` wrote (accuracy-guarded), searched as a second precision.",
)
@click.option("--slo-p99-ms", type=POSITIVE, default=15.0, show_default=True, help="p99 bound.")
@click.option(
    "--objective",
    type=click.Choice(["throughput", "latency"]),
    default="throughput",
    show_default=True,
)
@click.option(
    "--budget-s", type=SECONDS, default=180.0, show_default=True, help="Seconds for it all."
)
@provider_option
@max_batch_option(default=32)
@click.option(
    "--loadgen-s",
    type=SECONDS,
    default=5.0,
    show_default=True,
    help="Each LoadGen step's minimum duration.",
)
@click.option(
    "--loadgen-min-queries",
    type=COUNT,
    help="Each LoadGen step's minimum queries [default: early stopping's, 459].",
)
@click.option("--triton-config", type=OUTPUT_FILE, help="Write the winner's config.pbtxt to FILE.")
@plot_option("Throughput against p99 of every candidate.", name="plot")
@force_option()
@json_option()
@writes(["json_out", "triton_config", "plot"], inputs=["model", "int8"])
def command(model: Path, json_out: str | None, **options: Any) -> None:
    """Find the configuration to deploy under a p99 bound, judged by LoadGen's Server peak.

    \b
    Examples:
      resnet-deploy tune resnet50.onnx --int8 resnet50.int8.onnx --slo-p99-ms 15
      resnet-deploy tune resnet50.onnx --objective latency --budget-s 60 --json tune.json
    """
    from resnet_deploy.perf.tune import TuneOptions, format_report, tune

    with reporting(json_out) as progress:
        report = tune(model, TuneOptions(**options), progress=progress)
    nothing_met_the_bound = report.winner is None
    finish(report, json_out, options["force"], text=format_report, failed=nothing_met_the_bound)
