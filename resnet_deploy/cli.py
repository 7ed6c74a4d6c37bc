"""The ``resnet-deploy`` command: parse, call one library function, print."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from resnet_deploy import __version__
from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.model import ARCHS, VARIANTS
from resnet_deploy.providers import CUDNN_ALGOS
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


def parse_batch_sizes(ctx: click.Context, param: click.Parameter, value: str | None):
    """``1,8,32`` as a tuple of batch sizes, each checked by parse_batch; None when not given."""
    if value is None:
        return None
    sizes = tuple(parse_batch(part.strip()) for part in value.split(","))
    if None in sizes:
        raise click.BadParameter("give whole numbers such as 1,8,32")
    return sizes


@main.command("bench")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt.")
@click.option(
    "--batch-sizes",
    callback=parse_batch_sizes,
    help="Comma-separated [default: 1,8,32, or the batch a fixed-batch model was exported with].",
)
@click.option("--warmup", "warmup_runs", type=int, help="Warm-up runs per batch size.")
@click.option("--warmup-s", type=float, help="Warm-up seconds per batch size [default: 2].")
@click.option("--iterations", type=int, help="Timed runs per batch size.")
@click.option("--duration", "duration_s", type=float, help="Timed seconds per batch [default: 5].")
@click.option("--threads", type=int, help="Intra-op threads, eager too [default: physical cores].")
@click.option("--spin/--no-spin", default=True, show_default=True, help="Idle threads spin.")
@click.option(
    "--io-binding/--no-io-binding",
    default=True,
    show_default=True,
    help="GPU: keep inputs and outputs on the device (off: time copies too, end to end).",
)
@click.option("--cuda-graph", is_flag=True, help="CUDA: capture and replay a CUDA graph.")
@click.option("--cudnn-algo", type=click.Choice(CUDNN_ALGOS, case_sensitive=False))
@click.option("--cudnn-max-workspace/--no-cudnn-max-workspace", default=None)
@click.option(
    "--trt-cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="TensorRT: engine and timing cache folder (created if missing).",
)
@click.option("--trt-fp16", is_flag=True, help="TensorRT: allow fp16 kernels.")
@click.option(
    "--baseline",
    type=click.Choice(["torch", "none"]),
    default="torch",
    show_default=True,
    help="Also time PyTorch eager, rebuilt from the model's metadata.",
)
@json_option()
@click.option(
    "--csv",
    "csv_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write one row per batch size to FILE.",
)
@click.option(
    "--plot",
    "plot_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Plot latency and throughput against batch size to FILE.png.",
)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def bench_command(
    model: Path,
    json_out: str | None,
    csv_out: Path | None,
    plot_out: Path | None,
    force: bool,
    **options: Any,
) -> None:
    """Latency and throughput on ONNX Runtime, beside PyTorch eager in the same run.

    \b
    Examples:
      resnet-deploy bench resnet50.onnx
      resnet-deploy bench resnet50.onnx --batch-sizes 1,8 --duration 10 --csv b.csv --plot b.png
      resnet-deploy bench resnet50.onnx --provider cuda --cuda-graph --batch-sizes 8 --json
    """
    from resnet_deploy.bench import BenchOptions, bench, summary, write_plot
    from resnet_deploy.files import check_output_path
    from resnet_deploy.report import write_csv

    json_file = None if json_out in (None, "-") else Path(json_out)
    outputs = [out for out in (json_file, csv_out, plot_out) if out is not None]
    for out in outputs:
        check_output_path(out, force=force, inputs=[model])
    report = bench(model, BenchOptions(**options), progress=progress)
    emit_json(report, json_out)
    if csv_out is not None:
        write_csv(report.batches, csv_out)
    if plot_out is not None:
        write_plot(report, plot_out)
    if json_out != "-":
        click.echo(summary(report))
        for out in outputs:
            click.echo(f"wrote {out}")
    if all(b.error is not None for b in report.batches):
        sys.exit(1)  # nothing was measured


def parse_sizes(ctx: click.Context, param: click.Parameter, value: str | None):
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {value!r}") from None


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--repo",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Model repository folder (created if missing).",
)
@click.option("--name", default=None, help="Model name [default: the arch in its metadata].")
@click.option("--version", "model_version", type=int, default=1, show_default=True)
@click.option(
    "--max-batch-size",
    type=int,
    default=None,
    help="Largest batch Triton forms [default: 32; 0 for a fixed-batch model].",
)
@click.option(
    "--preferred-batch-sizes",
    callback=parse_sizes,
    metavar="N,N",
    help="Batch sizes the dynamic batcher aims for [default: 8,16 where they fit].",
)
@click.option("--max-queue-delay-us", type=int, default=100, show_default=True)
@click.option("--instances", type=int, default=1, show_default=True, help="Per GPU for gpu.")
@click.option("--kind", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True)
@click.option("--tensorrt", is_flag=True, help="Have ONNX Runtime hand the graph to TensorRT.")
@click.option("--fp16", is_flag=True, help="TensorRT in FP16 (needs --tensorrt).")
@click.option("--warmup/--no-warmup", default=True, show_default=True, help="Random-data warm-up.")
@click.option("--force", is_flag=True, help="Replace an existing version, config or labels.")
@json_option()
def triton(
    model: Path,
    repo: Path,
    name: str | None,
    model_version: int,
    max_batch_size: int | None,
    preferred_batch_sizes: tuple[int, ...] | None,
    max_queue_delay_us: int,
    instances: int,
    kind: str,
    tensorrt: bool,
    fp16: bool,
    warmup: bool,
    force: bool,
    json_out: str | None,
) -> None:
    """Write a Triton Inference Server model repository for an ONNX model.

    \b
    Examples:
      resnet-deploy triton resnet50.onnx --repo repo
      resnet-deploy triton resnet50.onnx --repo repo --tensorrt --fp16 --instances 2
      resnet-deploy triton retrained.onnx --repo repo --name resnet50 --version 2
    """
    from resnet_deploy.triton import TritonOptions, write_model_repository

    options = TritonOptions(
        repo=repo,
        name=name,
        version=model_version,
        max_batch_size=max_batch_size,
        preferred_batch_sizes=preferred_batch_sizes,
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        kind=kind,
        tensorrt=tensorrt,
        fp16=fp16,
        warmup=warmup,
        force=force,
    )
    result = write_model_repository(model, options)
    emit_json(result, json_out)
    if json_out == "-":
        return
    versions = ", ".join(map(str, result.versions_on_disk))
    click.echo(f"wrote {result.model_dir}: version {result.version} (on disk: {versions})")
    click.echo(f"  {result.model_file} ({result.model_bytes / 1e6:.1f} MB)")
    click.echo(f"  {result.config_file}")
    if result.labels_file:
        click.echo(f"  {result.labels_file} (ImageNet's 1000 class names)")
    click.echo()
    skip = 1 if result.max_batch_size > 0 else 0
    rows = [
        [t.name, role, t.data_type, list(t.shape), list(t.shape[skip:])]
        for role, tensors in (("input", result.inputs), ("output", result.outputs))
        for t in tensors
    ]
    click.echo(format_table(["tensor", "role", "type", "model shape", "config dims"], rows))
    click.echo()
    click.echo(f"max_batch_size {result.max_batch_size}; see {result.config_file} for the rest")
    for note in result.notes:
        click.echo(f"note: {note}")


@main.command()
@json_option()
def doctor(json_out: str | None) -> None:
    """Say what really works here: providers tried, CUDA libraries, GPUs, versions.

    Exits 0 whatever it finds: it is a report.

    \b
    Examples:
      resnet-deploy doctor
      resnet-deploy doctor --json doctor.json
    """
    from resnet_deploy.doctor import diagnose

    report = diagnose()
    emit_json(report, json_out)
    if json_out == "-":
        return
    click.echo(f"{report.onnxruntime}, built for CUDA {report.onnxruntime_cuda or '(none)'}")
    click.echo()
    rows = [[p.provider, "yes" if p.works else "NO", p.detail] for p in report.providers]
    click.echo(format_table(["provider", "works", "detail"], rows))
    click.echo()
    rows = [
        [lib.soname, "yes" if lib.found else "NO", lib.path or lib.error, "optional" * lib.optional]
        for lib in report.libraries
    ]
    click.echo(format_table(["library", "found", "path or error", ""], rows))
    click.echo()
    click.echo(f"GPUs: {'; '.join(report.gpus) or 'none visible to nvidia-smi'}")
    torch_cuda = report.torch_cuda or "none (CPU build)"
    click.echo(f"torch CUDA: {torch_cuda}, available: {report.torch_cuda_available}")
    click.echo()
    click.echo(format_table(["package", "version"], list(report.packages.items())))
    click.echo()
    if report.cuda_works:
        click.echo("CUDA works: CUDAExecutionProvider ran the probe model.")
    else:
        click.echo("CUDA does NOT work here:")
    for problem in report.problems:
        click.echo(f"  - {problem}")
