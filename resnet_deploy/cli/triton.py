"""``resnet-deploy triton``: a Triton Inference Server model repository for an ONNX model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from resnet_deploy.cli.options import (
    BATCH_SIZES,
    MODEL_FILE,
    OUTPUT_FOLDER,
    Number,
    force_option,
    given,
    instances_option,
    json_option,
    max_batch_size_option,
    max_queue_delay_us_option,
    name_option,
)
from resnet_deploy.cli.output import finish, writes


@click.command("triton")
@click.argument("model", type=MODEL_FILE)
@click.option(
    "--repo",
    required=True,
    type=OUTPUT_FOLDER,
    help="Model repository folder (created if missing).",
)
@name_option("Model name [default: the arch in its metadata].")
@click.option("--version", "model_version", type=Number(int, 1, 2**63 - 1), default=1)
@max_batch_size_option
@click.option(
    "--preferred-batch-sizes",
    type=BATCH_SIZES,
    help="Batch sizes the dynamic batcher aims for [default: 8,16 where they fit].",
)
@max_queue_delay_us_option
@instances_option("Per GPU for gpu.", default=1)
@click.option("--kind", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True)
@click.option("--tensorrt", is_flag=True, help="Have ONNX Runtime hand the graph to TensorRT.")
@click.option("--fp16", is_flag=True, help="TensorRT in FP16 (needs --tensorrt).")
@click.option(
    "--model-warmup/--no-model-warmup",
    "warmup",
    default=True,
    show_default=True,
    help="Triton warms the model up with random data when it loads it.",
)
@force_option("Replace an existing version, config or labels.")
@json_option()
@writes(["json_out"], folders=["repo"], inputs=["model"])
def command(
    model: Path, repo: Path, model_version: int, force: bool, json_out: str | None, **options: Any
) -> None:
    """Write a Triton Inference Server model repository for an ONNX model.

    \b
    Examples:
      resnet-deploy triton resnet50.onnx --repo repo
      resnet-deploy triton resnet50.onnx --repo repo --tensorrt --fp16 --instances 2
      resnet-deploy triton retrained.onnx --repo repo --name resnet50 --version 2
    """
    from resnet_deploy.serving.repository import (
        TritonOptions,
        format_result,
        write_model_repository,
    )

    chosen = TritonOptions(repo=repo, version=model_version, force=force, **given(**options))
    result = write_model_repository(model, chosen)
    finish(result, json_out, force, text=format_result)
