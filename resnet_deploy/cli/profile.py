"""``resnet-deploy profile``: where ONNX Runtime spends its time, per layer and op type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from resnet_deploy.cli.options import (
    COUNT,
    MODEL_FILE,
    OUTPUT_FILE,
    batch_size_option,
    compare_option,
    force_option,
    json_option,
    plot_option,
    threads_option,
    warmup_option,
)
from resnet_deploy.cli.output import finish, reporting, writes


@click.command("profile")
@click.argument("model", type=MODEL_FILE)
@batch_size_option(default=1)
@threads_option("Intra-op threads [default: physical cores].")
@click.option("--runs", type=COUNT, default=20, show_default=True, help="Profiled runs.")
@warmup_option("Untimed runs first.", default=5)
@compare_option("Also profile the same file with OpenVINO's per-layer counters.")
@click.option(
    "--optimized-model",
    type=OUTPUT_FILE,
    help="Keep the graph ONNX Runtime optimized and ran in FILE.onnx.",
)
@plot_option("Roofline-style plot of every Conv to FILE.png.")
@force_option()
@json_option()
@writes(["json_out", "plot_out", "optimized_model"], inputs=["model"])
def command(
    model: Path,
    plot_out: Path | None,
    force: bool,
    json_out: str | None,
    **options: Any,
) -> None:
    """Where ONNX Runtime spends its time: per layer and op type, against this CPU's peak.

    \b
    Examples:
      resnet-deploy profile resnet50.int8.onnx
      resnet-deploy profile resnet50.int8.onnx --batch-size 8 --compare openvino --plot p.png
    """
    from resnet_deploy.perf.profile import ProfileOptions, format_profile, profile_model, write_plot

    with reporting(json_out) as progress:
        report = profile_model(model, ProfileOptions(force=force, **options), progress=progress)
    finish(
        report,
        json_out,
        force,
        files=[(plot_out, lambda r, path: write_plot(r, path, replace=force))],
        text=format_profile,
    )
