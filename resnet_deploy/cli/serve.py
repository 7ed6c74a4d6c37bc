"""``resnet-deploy serve``: an ONNX model on Triton Inference Server, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from resnet_deploy.cli.options import (
    MAX_INT32,
    MODEL_FILE,
    PORT,
    Number,
    force_option,
    instances_option,
    json_option,
    max_batch_size_option,
    max_queue_delay_us_option,
    name_option,
    provider_option,
    spin_option,
    strict_placement_option,
    threads_option,
    top_option,
)
from resnet_deploy.cli.output import finish, progress, writes
from resnet_deploy.files import STDOUT


@click.command("serve")
@click.argument("model", type=MODEL_FILE)
@name_option("Model name [default: as `triton` names it].")
@provider_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; any other than loopback opens the models to the network, "
    "without authentication.",
)
@click.option("--http-port", type=PORT, default=8000, show_default=True)
@click.option("--grpc-port", type=PORT, default=8001, show_default=True)
@click.option("--metrics-port", type=PORT, default=8002, show_default=True)
@max_batch_size_option
@max_queue_delay_us_option
@click.option(
    "--max-queue-size",
    type=Number(int, 0, MAX_INT32),
    default=128,
    show_default=True,
    help="Requests waiting per model before new ones are rejected; 0: unbounded.",
)
@instances_option("Instances.", default=1)
@threads_option("Threads per instance (0: ONNX Runtime's default).", default=0)
@spin_option(default=False)
@top_option("Image k.", name="top_k")
@click.option(
    "--drain-timeout-s",
    type=Number(int, 1, 3600),
    default=20,
    show_default=True,
    help="On SIGINT/SIGTERM, longest wait for in-flight requests.",
)
@strict_placement_option
@json_option("Write the run's record to FILE (- for stdout) when the server stops.")
@force_option("Overwrite an existing JSON file.")
@writes(["json_out"], inputs=["model"])
def command(model: Path, json_out: str | None, force: bool, **options: Any) -> None:
    """Serve an ONNX model with Triton Inference Server (KServe v2 over HTTP and gRPC).

    Serves MODEL under the name, tensors and batching `triton` writes for it, and
    NAME_image, which takes encoded images and returns the top classes. Runs until
    Ctrl-C or SIGTERM; both finish in-flight requests before exiting.

    \b
    Examples:
      resnet-deploy serve resnet50.onnx
      resnet-deploy serve resnet50-int8.onnx --instances 2 --threads 1 --max-queue-size 64
    """
    from resnet_deploy.serving.server import (
        CanaryError,
        ServeOptions,
        format_ready,
        format_result,
        serve,
    )

    def ready(server: Any) -> None:
        click.echo(format_ready(server), err=json_out == STDOUT)
        sys.stdout.flush()

    try:
        result = serve(model, ServeOptions(**options), progress=progress, on_ready=ready)
    except CanaryError as exc:  # the record says what each endpoint answered
        finish({"model": model, "canary": exc.report}, json_out, force, error=exc)
    finish(result, json_out, force, text=format_result)
