"""The ``resnet-deploy`` command: parse, call one library function, print."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from resnet_deploy import __version__
from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.model import ARCHS, VARIANTS
from resnet_deploy.providers import CUDNN_ALGOS
from resnet_deploy.report import write_json


class ToolError(click.ClickException):
    """A library error as a one-line message with the error's own exit code."""

    def __init__(self, error: ResnetDeployError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code


class Group(click.Group):
    """Turns library and OS errors and Ctrl-C into clean exits; ``--debug`` shows tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ResnetDeployError as exc:
            if ctx.meta.get("debug"):
                raise
            raise ToolError(exc) from None
        except OSError as exc:  # a file the library did not expect to be unreadable
            if ctx.meta.get("debug"):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            raise ToolError(ResnetDeployError(f"{where}{exc.strerror or exc}")) from None
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


def model_options(command: Callable) -> Callable:
    """--arch, --variant, --weights, --seed, --image-size: the model a command builds."""
    options = [
        click.option("--arch", type=click.Choice(ARCHS), default="resnet50", show_default=True),
        click.option(
            "--variant", type=click.Choice(VARIANTS), default="torchvision", show_default=True
        ),
        click.option(
            "--weights",
            default="random",
            show_default=True,
            help="'random' (seeded by --seed) or a .pth/.pt/.safetensors state dict.",
        ),
        click.option(
            "--seed", type=int, default=0, show_default=True, help="Seed of random weights."
        ),
        click.option("--image-size", type=int, default=224, show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command()
@model_options
@click.option("--opset", type=int, default=18, show_default=True)
@click.option(
    "--batch",
    default="dynamic",
    show_default=True,
    callback=lambda ctx, param, value: parse_batch(value),
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
    batch: int | None,
    image_size: int,
    dynamic_size: bool,
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
      resnet-deploy export --dynamic-size -o any-size.onnx
    """
    from resnet_deploy.export import ExportOptions, export_model, format_result

    options = ExportOptions(
        output=output or Path(f"{arch}.onnx"),
        arch=arch,
        variant=variant,
        weights=weights,
        seed=seed,
        opset=opset,
        batch=batch,
        image_size=image_size,
        dynamic_size=dynamic_size,
        simplify=not no_simplify,
        exporter=exporter,
        force=force,
    )
    result = export_model(options, progress=progress)
    emit_json(result, json_out)
    if json_out != "-":  # otherwise stdout holds the JSON record alone
        click.echo(format_result(result))


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
@click.option(
    "--compare",
    type=click.Choice(["openvino"]),
    help="Also time OpenVINO on the same file, batch and threads (pip install openvino).",
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
@click.option(
    "--scenario",
    help="Run an MLPerf LoadGen scenario instead: singlestream, multistream, server, offline.",
)
@click.option(
    "--target-qps",
    type=float,
    help="Server: Poisson arrival rate [default: half the measured throughput]; "
    "Offline: expected samples/s [default: measured].",
)
@click.option("--latency-bound-ms", type=float, help="Server: p99 bound [default: 15].")
@click.option(
    "--min-duration", "min_duration_s", type=float, help="Scenario: seconds at least [default: 5]."
)
@click.option(
    "--min-queries",
    type=int,
    help="Scenario: queries at least [default: early stopping's minimum]; Offline: samples.",
)
@click.option("--samples", type=int, help="Scenario: generated inputs [64], or images used [all].")
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    help="Scenario: image folder to serve (class-index subfolders 0/ ... 999/ label it).",
)
@click.option(
    "--labels", type=click.Path(path_type=Path), help="Scenario: 'name<TAB>class' lines instead."
)
@click.option("--accuracy", is_flag=True, help="Scenario: LoadGen's accuracy mode, top-1.")
@click.option("--max-batch", type=int, help="Scenario: largest batch [1, 8, 8, 32 by scenario].")
@click.option("--batch-timeout-ms", type=float, help="Server: most a sample waits [default: 2].")
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Scenario: keep LoadGen's logs in DIR [default: removed].",
)
@click.option("--official", is_flag=True, help="Scenario: MLPerf's official ResNet50 settings.")
@click.option("--find-peak", is_flag=True, help="Server: bisect for the highest VALID QPS.")
@click.option("--peak-steps", type=int, help="Server --find-peak: LoadGen runs [default: 6].")
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
      resnet-deploy bench resnet50.onnx --scenario server --target-qps 20 --log-dir logs
      resnet-deploy bench resnet50.onnx --scenario offline --images val/ --accuracy
    """
    from resnet_deploy.bench import BenchOptions, bench, summary, write_plot
    from resnet_deploy.files import check_output_path
    from resnet_deploy.report import write_csv

    scenario = options.pop("scenario")
    if scenario is not None or any(options[key] not in (None, False) for key in SCENARIO_KEYS):
        scenario_args = {key: options.pop(key) for key in SCENARIO_KEYS}
        engine = BenchOptions(**options)
        bench_scenario(model, scenario, engine, scenario_args, json_out, csv_out, plot_out, force)
        return
    for key in SCENARIO_KEYS:
        del options[key]
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


SCENARIO_KEYS = (
    "target_qps",
    "latency_bound_ms",
    "min_duration_s",
    "min_queries",
    "samples",
    "images",
    "labels",
    "accuracy",
    "max_batch",
    "batch_timeout_ms",
    "log_dir",
    "official",
    "find_peak",
    "peak_steps",
)


def bench_scenario(
    model: Path,
    scenario: str | None,
    engine: Any,
    scenario_args: dict[str, Any],
    json_out: str | None,
    csv_out: Path | None,
    plot_out: Path | None,
    force: bool,
) -> None:
    """``bench --scenario``: LoadGen drives the load (see resnet_deploy.loadgen)."""
    from resnet_deploy.errors import InputError
    from resnet_deploy.files import check_output_path
    from resnet_deploy.loadgen import ScenarioOptions, format_result, run_scenario

    given = {key: value for key, value in scenario_args.items() if value not in (None, False)}
    if scenario is None:
        flags = ", ".join("--" + key.removesuffix("_s").replace("_", "-") for key in given)
        raise InputError(f"{flags} {'needs' if len(given) == 1 else 'need'} --scenario")
    if csv_out is not None or plot_out is not None:
        raise InputError("--csv and --plot chart batch sizes; with --scenario use --json")
    if engine.compare is not None:
        raise InputError("--compare times the latency loop; drop it with --scenario")
    if json_out not in (None, "-"):
        check_output_path(Path(json_out), force=force, inputs=[model])
    options = ScenarioOptions(scenario=scenario, engine=engine, force=force, **given)
    result = run_scenario(model, options, progress=progress)
    emit_json(result, json_out)
    if json_out != "-":
        click.echo(format_result(result))
        if json_out is not None:
            click.echo(f"wrote {json_out}")


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
    from resnet_deploy.triton import TritonOptions, format_result, write_model_repository

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
    if json_out != "-":
        click.echo(format_result(result))


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
    from resnet_deploy.doctor import diagnose, format_report

    report = diagnose()
    emit_json(report, json_out)
    if json_out != "-":
        click.echo(format_report(report))


@main.command("verify")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--weights", help="The checkpoint, if it moved since export (its sha256 must match).")
@click.option("--arch", type=click.Choice(ARCHS), help="Only for files without metadata.")
@click.option("--variant", type=click.Choice(VARIANTS), help="Only for files without metadata.")
@click.option("--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt.")
@click.option(
    "--batch-sizes",
    callback=parse_batch_sizes,
    help="Comma-separated [default: 1,2,7, or the batch a fixed-batch model was exported with].",
)
@click.option("--image-size", type=int, help="[default: the model's; 160 too if it allows]")
@click.option(
    "--inputs",
    default="random",
    show_default=True,
    help="'random' (seeded normal), a folder of images, or an N,3,S,S float32 .npy file.",
)
@click.option("--samples", type=int, help="Inputs per shape [default: 8 random, or every image].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random inputs.")
@click.option("--atol", type=float, help="Absolute tolerance [default: 5e-4 for fp32].")
@click.option("--rtol", type=float, help="Relative tolerance [default: 1e-3 for fp32].")
@click.option("--min-cosine", type=float, help="Least cosine similarity of each sample's logits.")
@click.option("--allow-tf32", is_flag=True, help="CUDA: leave TF32 on, as ONNX Runtime would.")
@click.option("--localize", is_flag=True, help="Compare layer by layer; name the first divergence.")
@json_option()
def verify_command(model: Path, json_out: str | None, **options: Any) -> None:
    """Check that an ONNX file computes what the eager PyTorch model computes.

    Exits 0 when every shape passes, 1 when the numbers disagree, 2 on bad input.

    \b
    Examples:
      resnet-deploy verify resnet50.onnx
      resnet-deploy verify resnet50.onnx --inputs photos/ --localize
      resnet-deploy verify resnet50.onnx --provider cuda --batch-sizes 1,8 --json report.json
    """
    from resnet_deploy.errors import NumericsError
    from resnet_deploy.verify import VerifyOptions, format_report, verify

    report = verify(model, VerifyOptions(**options), progress=progress)
    emit_json(report, json_out)
    if json_out != "-":
        click.echo(format_report(report))
    if not report.passed:
        raise NumericsError(report.summary())


@main.command("predict")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--top", type=int, default=5, show_default=True, help="Classes shown per image.")
@click.option("--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt.")
@click.option("--batch-size", type=int, help="Images per run [default: 8, or the model's fixed].")
@json_option()
@click.option("--force", is_flag=True, help="Overwrite an existing JSON file.")
def predict_command(
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
    from resnet_deploy.files import check_output_path
    from resnet_deploy.predict import PredictOptions, format_predictions, predict

    if json_out not in (None, "-"):
        check_output_path(Path(json_out), force=force, inputs=[model])
    report = predict(model, images, PredictOptions(**options), progress=progress)
    emit_json(report, json_out)
    if json_out != "-" and report.predictions:
        click.echo(format_predictions(report))
    for error in report.errors:
        click.echo(f"error: {error.error}", err=True)
    if report.errors:
        total = len(report.predictions) + len(report.errors)
        click.echo(f"{len(report.errors)} of {total} inputs failed", err=True)
        sys.exit(2)  # as for any bad input, but only after the good images are printed


@main.command("run")
@model_options
@click.option("--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt.")
@click.option(
    "--batch-sizes",
    callback=parse_batch_sizes,
    default="1,8",
    show_default=True,
    help="Comma-separated batch sizes to bench.",
)
@click.option("--duration", "duration_s", type=float, help="Timed seconds per batch size.")
@click.option(
    "--baseline", type=click.Choice(["torch", "none"]), default="torch", show_default=True
)
@click.option(
    "-o",
    "--out",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("resnet-deploy-run"),
    show_default=True,
    help="Folder for model.onnx and the reports.",
)
@click.option("--force", is_flag=True, help="Replace a folder that already holds files.")
@json_option()
def run(
    arch: str,
    variant: str,
    weights: str,
    seed: int,
    image_size: int,
    provider: str,
    batch_sizes: tuple[int, ...],
    duration_s: float | None,
    baseline: str,
    folder: Path,
    force: bool,
    json_out: str | None,
) -> None:
    """Export, verify and bench in one go, with every artifact in one folder.

    Stops before the bench (exit 1) when the export does not verify.

    \b
    Examples:
      resnet-deploy run
      resnet-deploy run --variant seed --weights tutorial.pth -o seed-run
      resnet-deploy run --provider cuda --batch-sizes 1,32
    """
    from resnet_deploy.pipeline import RunOptions, format_run, run_pipeline

    options = RunOptions(
        folder=folder,
        arch=arch,
        variant=variant,
        weights=weights,
        seed=seed,
        image_size=image_size,
        provider=provider,
        batch_sizes=batch_sizes,
        duration_s=duration_s,
        baseline=baseline,
        force=force,
    )
    report = run_pipeline(options, progress=progress)
    emit_json(report, json_out)
    if json_out != "-":
        click.echo(format_run(report))
    if not report.passed:
        sys.exit(1)


@main.command("optimize")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--precision", type=click.Choice(["fp16", "int8"]), required=True, help="Target precision."
)
@click.option(
    "--calibration",
    default="random",
    show_default=True,
    help="int8: 'random' inputs, or a folder of images (ImageNet preprocessing).",
)
@click.option("--samples", type=int, default=32, show_default=True, help="Calibration inputs.")
@click.option(
    "--method",
    type=click.Choice(["minmax", "entropy", "percentile"]),
    default="minmax",
    show_default=True,
    help="int8 calibration method.",
)
@click.option("--per-channel/--per-tensor", default=True, show_default=True)
@click.option("--exclude", default="", help="Comma-separated nodes or modules to keep in float.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file [default: MODEL.PRECISION.onnx].",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--no-guard", is_flag=True, help="Write the model without the accuracy guard.")
@click.option(
    "--guard-samples", type=int, default=16, show_default=True, help="Held-out inputs per shape."
)
@json_option()
def optimize(
    model: Path,
    precision: str,
    calibration: str,
    samples: int,
    method: str,
    per_channel: bool,
    exclude: str,
    output: Path | None,
    force: bool,
    no_guard: bool,
    guard_samples: int,
    json_out: str | None,
) -> None:
    """Make an fp16 or int8 model, checked against the eager fp32 model before it is written.

    \b
    Examples:
      resnet-deploy optimize resnet50.onnx --precision int8
      resnet-deploy optimize resnet50.onnx --precision int8 --calibration imgs/ --exclude conv1,fc
      resnet-deploy optimize resnet50.onnx --precision fp16 -o resnet50.fp16.onnx
    """
    from resnet_deploy.optimize import GuardFailed, OptimizeOptions, format_result, optimize_model

    options = OptimizeOptions(
        precision=precision,
        output=output,
        calibration=calibration,
        samples=samples,
        method=method,
        per_channel=per_channel,
        exclude=tuple(name.strip() for name in exclude.split(",") if name.strip()),
        guard=not no_guard,
        guard_samples=guard_samples,
        force=force,
    )
    try:
        result = optimize_model(model, options, progress=progress)
    except GuardFailed as failed:
        emit_json(failed.result, json_out)
        if json_out != "-":
            click.echo(format_result(failed.result), err=True)
        raise
    emit_json(result, json_out)
    if json_out != "-":
        click.echo(format_result(result))


@main.command("profile")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch-size", type=int, default=1, show_default=True)
@click.option("--threads", type=int, help="Intra-op threads [default: physical cores].")
@click.option("--runs", type=int, default=20, show_default=True, help="Profiled runs.")
@click.option("--warmup", "warmup_runs", type=int, default=5, show_default=True)
@click.option(
    "--compare",
    type=click.Choice(["openvino"]),
    help="Also profile the same file with OpenVINO's per-layer counters.",
)
@click.option(
    "--optimized-model",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Keep the graph ONNX Runtime optimized and ran in FILE.onnx.",
)
@click.option(
    "--plot",
    "plot_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Roofline-style plot of every Conv to FILE.png.",
)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@json_option()
def profile_command(
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
    from resnet_deploy.files import check_output_path
    from resnet_deploy.profile import ProfileOptions, format_profile, profile_model, write_plot

    json_file = None if json_out in (None, "-") else Path(json_out)
    for out in (json_file, plot_out, options["optimized_model"]):
        if out is not None:
            check_output_path(out, force=force, inputs=[model])
    report = profile_model(model, ProfileOptions(**options), progress=progress)
    emit_json(report, json_out)
    if plot_out is not None:
        write_plot(report, plot_out)
    if json_out != "-":
        click.echo(format_profile(report))


@main.command("tune")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--int8",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The int8 file `optimize` wrote (accuracy-guarded), searched as a second precision.",
)
@click.option("--slo-p99-ms", type=float, default=15.0, show_default=True, help="p99 bound.")
@click.option(
    "--objective",
    type=click.Choice(["throughput", "latency"]),
    default="throughput",
    show_default=True,
)
@click.option(
    "--budget-s", type=float, default=180.0, show_default=True, help="Seconds for it all."
)
@click.option("--provider", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--max-batch", type=int, default=32, show_default=True)
@click.option(
    "--loadgen-s", type=float, default=5.0, show_default=True, help="LoadGen check's duration."
)
@click.option(
    "--loadgen-min-queries", type=int, help="LoadGen check's queries [default: its minimum]."
)
@click.option(
    "--triton-config",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the winner's Triton config.pbtxt to FILE.",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Throughput against p99 of every candidate to FILE.png.",
)
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@json_option()
def tune_command(model: Path, json_out: str | None, **options: Any) -> None:
    """Find the configuration to deploy under a p99 bound, checked with LoadGen.

    \b
    Examples:
      resnet-deploy tune resnet50.onnx --int8 resnet50.int8.onnx --slo-p99-ms 15
      resnet-deploy tune resnet50.onnx --objective latency --budget-s 60 --json tune.json
    """
    from resnet_deploy.files import check_output_path
    from resnet_deploy.tune import TuneOptions, format_report, tune

    json_file = None if json_out in (None, "-") else Path(json_out)
    inputs = [model] + ([options["int8"]] if options["int8"] else [])
    for out in (json_file, options["triton_config"], options["plot"]):
        if out is not None:
            check_output_path(out, force=options["force"], inputs=inputs)
    report = tune(model, TuneOptions(**options), progress=progress)
    emit_json(report, json_out)
    if json_out != "-":
        click.echo(format_report(report))
    if report.winner is None:
        sys.exit(1)  # nothing met the bound
