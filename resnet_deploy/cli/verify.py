"""``resnet-deploy verify``: does the ONNX file compute what the eager PyTorch model computes?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from resnet_deploy.cli.options import (
    MODEL_FILE,
    NON_NEGATIVE,
    Number,
    arch_option,
    batch_sizes_option,
    force_option,
    image_size_option,
    json_option,
    provider_option,
    samples_option,
    seed_option,
    strict_placement_option,
    variant_option,
    weights_option,
)
from resnet_deploy.cli.output import finish, reporting, writes


@click.command("verify")
@click.argument("model", type=MODEL_FILE)
@weights_option("The checkpoint, if it moved since export (its sha256 must match).")
@arch_option("Only for files without metadata.")
@variant_option("Only for files without metadata.")
@provider_option
@batch_sizes_option(
    "Comma-separated [default: 1,2,7, or the batch a fixed-batch model was exported with]."
)
@image_size_option("[default: the model's; 160 too if it allows]")
@click.option(
    "--inputs",
    default="random",
    show_default=True,
    help="'random' (seeded normal), a folder of images, or an N,3,S,S float32 .npy file.",
)
@samples_option("Inputs per shape [default: 8 random, or every image].")
@seed_option("Seed of random inputs.")
@click.option("--atol", type=NON_NEGATIVE, help="Absolute tolerance [default: 5e-4 for fp32].")
@click.option("--rtol", type=NON_NEGATIVE, help="Relative tolerance [default: 1e-3 for fp32].")
@click.option(
    "--min-cosine", type=Number(float, -1, 1), help="Least cosine similarity of each sample."
)
@click.option("--allow-tf32", is_flag=True, help="CUDA: leave TF32 on, as ONNX Runtime would.")
@click.option("--localize", is_flag=True, help="Compare layer by layer; name the first divergence.")
@strict_placement_option
@json_option()
@force_option("Overwrite an existing JSON file.")
@writes(["json_out"], inputs=["model", "weights", "inputs"])
def command(model: Path, json_out: str | None, force: bool, **options: Any) -> None:
    """Check that an ONNX file computes what the eager PyTorch model computes.

    Exits 0 when every shape passes, 1 when the numbers disagree, 2 on bad input.

    \b
    Examples:
      resnet-deploy verify resnet50.onnx
      resnet-deploy verify resnet50.onnx --inputs photos/ --localize
      resnet-deploy verify resnet50.onnx --provider cuda --batch-sizes 1,8 --json report.json
    """
    from resnet_deploy.check.verify import VerifyOptions, format_report, verify
    from resnet_deploy.errors import NumericsError

    with reporting(json_out) as progress:
        report = verify(model, VerifyOptions(**options), progress=progress)
    error = None if report.passed else NumericsError(report.summary())
    finish(report, json_out, force, text=format_report, error=error)
