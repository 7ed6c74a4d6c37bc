"""The ``resnet-deploy`` command: parse, call one library function, print.

Shared option definitions live here once (``--provider``, ``--batch-sizes``, ``--force``,
``--json``, ``--threads``) and every number is parsed by a type that refuses NaN, infinity and
out-of-range values, so no command can forget a check. ``writes`` checks every output of a
command against its inputs and each other before the command does any work.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from resnet_deploy import __version__
from resnet_deploy.errors import ResnetDeployError, Terminated
from resnet_deploy.files import STDOUT, check_outputs
from resnet_deploy.model.metadata import (
    ARCHS,
    INT8_TARGETS,
    MAX_BATCH,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    VARIANTS,
)
from resnet_deploy.report.records import write_json
from resnet_deploy.runtime.names import CUDNN_ALGOS

EXIT_SIGINT = 130  # 128 + SIGINT, as shells report it
EXIT_SIGTERM = 143  # 128 + SIGTERM
MAX_THREADS = 4 * (os.cpu_count() or 1)  # past this, threads only contend (and ORT can crash)
MAX_SEED = 2**63 - 1
# LoadGen schedules every query of a run up front; past this rate no machine keeps up, and the
# schedule alone outgrows memory (the library checks the query count against memory as well).
MAX_TARGET_QPS = 1_000_000


class ToolError(click.ClickException):
    """A library error as a one-line message with the error's own exit code."""

    def __init__(self, error: ResnetDeployError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


class Group(click.Group):
    """Turns library and OS errors, Ctrl-C and SIGTERM into clean exits; ``--debug`` shows
    tracebacks. SIGTERM raises where the program is, like Ctrl-C, so every ``finally`` and
    context manager removes its temporary files on the way out."""

    def invoke(self, ctx: click.Context) -> Any:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return super().invoke(ctx)
        except ResnetDeployError as exc:
            if ctx.meta.get("debug"):
                raise
            raise ToolError(exc) from None
        except MemoryError:
            if ctx.meta.get("debug"):
                raise
            raise ToolError(
                ResnetDeployError("out of memory: try a smaller batch size or image size")
            ) from None
        except OSError as exc:  # a file the library did not expect to be unreadable
            if ctx.meta.get("debug"):
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            raise ToolError(ResnetDeployError(f"{where}{exc.strerror or exc}")) from None
        except KeyboardInterrupt as exc:
            if ctx.meta.get("debug"):
                raise
            terminated = isinstance(exc, Terminated)
            code = EXIT_SIGTERM if terminated else EXIT_SIGINT
            click.echo(
                f"\n{'Terminated' if terminated else 'Interrupted'}; nothing was written.",
                err=True,
            )
            if getattr(exc, "native_work_running", False):
                # Native threads that cannot be stopped (LoadGen's) would call into an
                # interpreter shutting down; our files are already removed, so end here.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
            sys.exit(code)
        finally:
            signal.signal(signal.SIGTERM, previous)


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


class Number(click.ParamType):
    """A finite int or float within bounds: NaN and infinity are refused at parse time."""

    def __init__(
        self,
        kind: type = float,
        low: float | None = None,
        high: float | None = None,
        *,
        low_open: bool = False,
    ) -> None:
        self.kind, self.low, self.high, self.low_open = kind, low, high, low_open
        self.name = "integer" if kind is int else "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = self.kind(str(value).strip())
            except (ValueError, OverflowError):
                self.fail(f"{value!r} is not a {'whole number' if self.kind is int else 'number'}")
        if self.kind is float and not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number")
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            bound = "above" if self.low_open else "at least"
            self.fail(f"must be {bound} {self.low:g}, got {value}")
        if self.high is not None and number > self.high:
            self.fail(f"must be at most {self.high:g}, got {value}")
        return number


POSITIVE = Number(float, 0, low_open=True)
NON_NEGATIVE = Number(float, 0)
COUNT = Number(int, 1, 2**31 - 1)  # runs, samples, queries: at least one
SEED = Number(int, 0, MAX_SEED)
IMAGE_SIZE = Number(int, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)


class IntList(click.ParamType):
    """``1,8,32``: whole numbers separated by commas, each within bounds."""

    name = "N,N,..."

    def __init__(self, low: int = 1, high: int = MAX_BATCH) -> None:
        self.item = Number(int, low, high)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        parts = [part.strip() for part in str(value).split(",")]
        if not all(parts):
            self.fail(f"expected whole numbers separated by commas, such as 1,8,32, got {value!r}")
        return tuple(self.item.convert(part, param, ctx) for part in parts)


BATCH_SIZES = IntList()


def options(*decorators: Callable) -> Callable:
    """Apply several click decorators as one, in the order they are listed."""

    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def json_option(help_text: str = "Write the result as one JSON record to FILE (- for stdout)."):
    return click.option(
        "--json",
        "json_out",
        is_flag=False,
        flag_value=STDOUT,
        default=None,
        metavar="[FILE]",
        help=help_text,
    )


def force_option(help_text: str = "Overwrite existing output files.") -> Callable:
    return click.option("--force", is_flag=True, help=help_text)


def provider_option(command: Callable) -> Callable:
    return click.option(
        "--provider", default="cpu", show_default=True, help="cpu, cuda or tensorrt."
    )(command)


strict_placement_option = click.option(
    "--strict-placement", is_flag=True, help="GPU: fail if compute nodes land on the CPU."
)


def spin_option(default: bool) -> Callable:
    return click.option(
        "--spin/--no-spin", default=default, show_default=True, help="Idle ORT threads spin."
    )


def batch_sizes_option(help_text: str, default: str | None = None) -> Callable:
    return click.option(
        "--batch-sizes",
        type=BATCH_SIZES,
        default=default,
        show_default=default is not None,
        help=help_text,
    )


def threads_option(help_text: str) -> Callable:
    return click.option("--threads", type=Number(int, 1, MAX_THREADS), help=help_text)


def writes(
    files: Iterable[str] = (),
    *,
    folders: Iterable[str] = (),
    inputs: Iterable[str] = (),
    defaults: dict[str, Callable[[dict[str, Any]], Any]] | None = None,
) -> Callable:
    """Check the named output parameters against the named inputs and each other, before the
    command runs: an input is never overwritten, even with --force (see files.check_outputs).
    ``defaults`` fills an output the user left out (``ARCH.onnx``) so that it is checked too."""

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def checked(**kwargs: Any) -> Any:
            for name, default in (defaults or {}).items():
                if kwargs.get(name) is None:
                    kwargs[name] = default(kwargs)

            def values(names: Iterable[str]) -> list[Any]:
                found = []
                for name in names:
                    value = kwargs.get(name)
                    found += list(value) if isinstance(value, (tuple, list)) else [value]
                return found

            sources = [v for v in values(inputs) if v is not None and os.path.lexists(str(v))]
            check_outputs(
                values(files),
                folders=values(folders),
                inputs=sources,
                force=kwargs.get("force", False),
            )
            return command(**kwargs)

        return checked

    return decorate


def emit_json(record: Any, destination: str | None, *, force: bool = False) -> None:
    """The record to stdout (``-``) or to a file already checked by ``writes``."""
    if destination is not None:
        text = write_json(record, destination, replace=force)
        if text is not None:
            click.echo(text, nl=False)


def given(**values: Any) -> dict[str, Any]:
    """Only the options the user gave: the rest take the library's own defaults."""
    return {key: value for key, value in values.items() if value is not None}


def progress(step: str) -> None:
    click.echo(f"... {step}", err=True)


model_options = options(
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
    click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of random weights."),
    click.option("--image-size", type=IMAGE_SIZE, default=224, show_default=True),
)


MODEL_FILE = click.Path(dir_okay=False, path_type=Path)  # existence: checked by onnxfile
OUTPUT_FILE = click.Path(dir_okay=False, path_type=Path)
OUTPUT_FOLDER = click.Path(file_okay=False, path_type=Path)


@main.command()
@model_options
@click.option("--opset", type=Number(int, 1, 1000), help="ONNX opset [default: 18].")
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
@click.option("-o", "--output", type=OUTPUT_FILE, help="Output file [default: ARCH.onnx].")
@force_option("Overwrite an existing output file.")
@json_option()
@writes(
    ["output", "json_out"],
    inputs=["weights"],
    defaults={"output": lambda options: Path(f"{options['arch']}.onnx")},
)
def export(
    arch: str,
    variant: str,
    weights: str,
    seed: int,
    opset: int | None,
    batch: int | None,
    image_size: int,
    dynamic_size: bool,
    no_simplify: bool,
    exporter: str,
    output: Path,
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
    from resnet_deploy.convert.export import ExportOptions, export_model, format_result

    options = ExportOptions(
        output=output,
        arch=arch,
        variant=variant,
        weights=weights,
        seed=seed,
        batch=batch,
        image_size=image_size,
        dynamic_size=dynamic_size,
        simplify=not no_simplify,
        exporter=exporter,
        force=force,
        **given(opset=opset),
    )
    result = export_model(options, progress=progress)
    emit_json(result, json_out, force=force)
    if json_out != STDOUT:  # otherwise stdout holds the JSON record alone
        click.echo(format_result(result))


def parse_batch(value: str) -> int | None:
    if value == "dynamic":
        return None
    try:
        return Number(int, 1, MAX_BATCH).convert(value, None, None)
    except click.BadParameter:
        raise click.BadParameter(
            f"expected 'dynamic' or a whole number from 1 to {MAX_BATCH}, got {value!r}"
        ) from None


@main.command("bench")
@click.argument("model", required=False, type=MODEL_FILE)
@provider_option
@batch_sizes_option(
    "Comma-separated [default: 1,8,32, or the batch a fixed-batch model was exported with]."
)
@click.option("--warmup", "warmup_runs", type=Number(int, 0), help="Warm-up runs per batch size.")
@click.option("--warmup-s", type=NON_NEGATIVE, help="Warm-up seconds per batch size [default: 2].")
@click.option("--iterations", type=COUNT, help="Timed runs per batch size.")
@click.option("--duration", "duration_s", type=POSITIVE, help="Timed seconds per batch [5].")
@threads_option("Intra-op threads, eager too [default: physical cores].")
@spin_option(default=True)
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
    type=OUTPUT_FOLDER,
    help="TensorRT: engine and timing cache folder (created if missing).",
)
@click.option("--trt-fp16", is_flag=True, help="TensorRT: allow fp16 kernels.")
@strict_placement_option
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
@click.option("--csv", "csv_out", type=OUTPUT_FILE, help="Write one row per batch size to FILE.")
@click.option(
    "--plot",
    "plot_out",
    type=OUTPUT_FILE,
    help="Plot latency and throughput against batch size to FILE.png.",
)
@force_option()
@click.option(
    "--scenario",
    help="Run an MLPerf LoadGen scenario instead: singlestream, multistream, server, offline.",
)
@click.option(
    "--target-qps",
    type=Number(float, 0, MAX_TARGET_QPS, low_open=True),
    help="Server: Poisson arrival rate [default: half the measured throughput]; "
    "Offline: expected samples/s [default: measured].",
)
@click.option("--latency-bound-ms", type=POSITIVE, help="Server: p99 bound [default: 15].")
@click.option(
    "--min-duration",
    "min_duration_s",
    type=Number(float, 0, 7 * 24 * 3600, low_open=True),
    help="Scenario: seconds at least [default: 5].",
)
@click.option(
    "--min-queries",
    type=COUNT,
    help="Scenario: queries at least [default: early stopping's minimum]; Offline: samples.",
)
@click.option(
    "--samples", type=COUNT, help="Scenario: generated inputs [64], or images used [all]."
)
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    help="Scenario: image folder to serve (class-index subfolders 0/ ... 999/ label it).",
)
@click.option(
    "--labels", type=click.Path(path_type=Path), help="Scenario: 'name<TAB>class' lines instead."
)
@click.option("--accuracy", is_flag=True, help="Scenario: LoadGen's accuracy mode, top-1.")
@click.option(
    "--max-batch", type=Number(int, 1, MAX_BATCH), help="Scenario: largest batch [1, 8, 8, 32]."
)
@click.option(
    "--batch-timeout-ms", type=Number(float, 0, 60_000), help="Server: most a sample waits [2]."
)
@click.option(
    "--instances",
    type=Number(int, 1, 1024),
    help="Scenario: sessions sharing the queue, a worker thread each, --threads apiece [1].",
)
@click.option(
    "--log-dir",
    type=OUTPUT_FOLDER,
    help="Scenario: keep LoadGen's logs in DIR [default: removed].",
)
@click.option("--official", is_flag=True, help="Scenario: MLPerf's official ResNet50 settings.")
@click.option("--find-peak", is_flag=True, help="Server: bisect for the highest VALID QPS.")
@click.option("--peak-steps", type=Number(int, 1, 20), help="Server --find-peak: runs [6].")
@click.option("--url", help="Bench a served model: grpc://HOST:PORT or http://HOST:PORT.")
@click.option("--model-name", help="--url: the served model [default: MODEL's arch, or the one].")
@click.option(
    "--concurrency",
    type=Number(int, 1, 4096),
    help="--url: requests in flight [1; 16 with --scenario].",
)
@writes(
    ["json_out", "csv_out", "plot_out"],
    folders=["log_dir", "trt_cache"],
    inputs=["model", "images", "labels"],
)
def bench_command(
    model: Path | None,
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
      resnet-deploy bench resnet50.onnx --scenario server --find-peak --instances 2 --threads 1
      resnet-deploy bench resnet50.onnx --scenario offline --images val/ --accuracy
      resnet-deploy bench --url grpc://127.0.0.1:8001 --concurrency 8
      resnet-deploy bench resnet50.onnx --url http://127.0.0.1:8000 --scenario server
    """
    from resnet_deploy.perf.bench import BenchOptions, bench, summary, write_plot
    from resnet_deploy.report.records import write_csv

    endpoint = endpoint_options(model, options)
    scenario = options.pop("scenario")
    scenario_args = {key: options.pop(key) for key in SCENARIO_KEYS}
    engine = BenchOptions(**options)
    if scenario is not None or any(
        v is not None and v is not False for v in scenario_args.values()
    ):
        bench_scenario(
            model, scenario, engine, scenario_args, json_out, csv_out, plot_out, force, endpoint
        )
        return
    if endpoint is not None:
        bench_url(model, endpoint, engine, json_out, csv_out, plot_out, force)
        return
    report = bench(model, engine, progress=progress)
    emit_json(report, json_out, force=force)
    if csv_out is not None:
        write_csv(report.batches, csv_out, replace=force)
    if plot_out is not None:
        write_plot(report, plot_out, replace=force)
    if json_out != STDOUT:
        click.echo(summary(report))
        for out in (json_out, csv_out, plot_out):
            if out is not None:
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
    "instances",
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
    endpoint: Any = None,
) -> None:
    """``bench --scenario``: LoadGen drives the load (see resnet_deploy.perf.loadgen)."""
    from resnet_deploy.errors import InputError
    from resnet_deploy.perf.loadgen import ScenarioOptions, format_result, run_scenario

    # 0 is a value: only options not given at all (None) or flags left off (False) are dropped
    chosen = {k: v for k, v in scenario_args.items() if v is not None and v is not False}
    if scenario is None:
        flags = ", ".join("--" + key.removesuffix("_s").replace("_", "-") for key in chosen)
        raise InputError(f"{flags} {'needs' if len(chosen) == 1 else 'need'} --scenario")
    if csv_out is not None or plot_out is not None:
        raise InputError("--csv and --plot chart batch sizes; with --scenario use --json")
    if engine.compare is not None:
        raise InputError("--compare times the latency loop; drop it with --scenario")
    options = ScenarioOptions(
        scenario=scenario, engine=engine, endpoint=endpoint, force=force, **chosen
    )
    result = run_scenario(model, options, progress=progress)
    emit_json(result, json_out, force=force)
    if json_out != STDOUT:
        click.echo(format_result(result))
        if json_out is not None:
            click.echo(f"wrote {json_out}")


@main.command()
@click.argument("model", type=MODEL_FILE)
@click.option(
    "--repo",
    required=True,
    type=OUTPUT_FOLDER,
    help="Model repository folder (created if missing).",
)
@click.option("--name", default=None, help="Model name [default: the arch in its metadata].")
@click.option("--version", "model_version", type=Number(int, 1, 2**63 - 1), default=1)
@click.option(
    "--max-batch-size",
    type=Number(int, 0, MAX_BATCH),
    help="Largest batch Triton forms [default: 32; 0 for a fixed-batch model].",
)
@click.option(
    "--preferred-batch-sizes",
    type=BATCH_SIZES,
    help="Batch sizes the dynamic batcher aims for [default: 8,16 where they fit].",
)
@click.option(
    "--max-queue-delay-us", type=Number(int, 0, 2**31 - 1), help="Batcher wait [default: 100]."
)
@click.option("--instances", type=Number(int, 1, 1024), help="Per GPU for gpu [default: 1].")
@click.option("--kind", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True)
@click.option("--tensorrt", is_flag=True, help="Have ONNX Runtime hand the graph to TensorRT.")
@click.option("--fp16", is_flag=True, help="TensorRT in FP16 (needs --tensorrt).")
@click.option("--warmup/--no-warmup", default=True, show_default=True, help="Random-data warm-up.")
@force_option("Replace an existing version, config or labels.")
@json_option()
@writes(["json_out"], folders=["repo"], inputs=["model"])
def triton(
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
    emit_json(result, json_out, force=force)
    if json_out != STDOUT:
        click.echo(format_result(result))


@main.command()
@json_option()
@force_option("Overwrite an existing JSON file.")
@writes(["json_out"])
def doctor(json_out: str | None, force: bool) -> None:
    """Say what really works here: providers tried, CUDA libraries, GPUs, versions.

    Exits 0 whatever it finds: it is a report.

    \b
    Examples:
      resnet-deploy doctor
      resnet-deploy doctor --json doctor.json
    """
    from resnet_deploy.doctor import diagnose, format_report

    report = diagnose()
    emit_json(report, json_out, force=force)
    if json_out != STDOUT:
        click.echo(format_report(report))


@main.command("verify")
@click.argument("model", type=MODEL_FILE)
@click.option("--weights", help="The checkpoint, if it moved since export (its sha256 must match).")
@click.option("--arch", type=click.Choice(ARCHS), help="Only for files without metadata.")
@click.option("--variant", type=click.Choice(VARIANTS), help="Only for files without metadata.")
@provider_option
@batch_sizes_option(
    "Comma-separated [default: 1,2,7, or the batch a fixed-batch model was exported with]."
)
@click.option("--image-size", type=IMAGE_SIZE, help="[default: the model's; 160 too if it allows]")
@click.option(
    "--inputs",
    default="random",
    show_default=True,
    help="'random' (seeded normal), a folder of images, or an N,3,S,S float32 .npy file.",
)
@click.option("--samples", type=COUNT, help="Inputs per shape [default: 8 random, or every image].")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of random inputs.")
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
def verify_command(model: Path, json_out: str | None, force: bool, **options: Any) -> None:
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

    report = verify(model, VerifyOptions(**options), progress=progress)
    emit_json(report, json_out, force=force)
    if json_out != STDOUT:
        click.echo(format_report(report))
    if not report.passed:
        raise NumericsError(report.summary())


@main.command("predict")
@click.argument("model", type=MODEL_FILE)
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--top", type=Number(int, 1, 1000), default=5, show_default=True, help="Classes.")
@provider_option
@click.option(
    "--batch-size", type=Number(int, 1, MAX_BATCH), help="Images per run [default: 8, or fixed]."
)
@json_option()
@force_option("Overwrite an existing JSON file.")
@writes(["json_out"], inputs=["model", "images"])
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
    from resnet_deploy.predict import PredictOptions, format_predictions, predict

    report = predict(model, images, PredictOptions(**options), progress=progress)
    emit_json(report, json_out, force=force)
    if json_out != STDOUT and report.predictions:
        click.echo(format_predictions(report))
    for error in report.errors:
        click.echo(f"error: {error.error}", err=True)
    if report.errors:
        total = len(report.predictions) + len(report.errors)
        click.echo(f"{len(report.errors)} of {total} inputs failed", err=True)
        sys.exit(2)  # as for any bad input, but only after the good images are printed


@main.command("run")
@model_options
@provider_option
@batch_sizes_option("Comma-separated batch sizes to bench [default: 1,8].")
@click.option("--duration", "duration_s", type=POSITIVE, help="Timed seconds per batch size.")
@click.option("--baseline", type=click.Choice(["torch", "none"]), help="[default: torch]")
@click.option(
    "-o",
    "--out",
    "folder",
    type=OUTPUT_FOLDER,
    help="Folder for model.onnx and the reports [default: resnet-deploy-run].",
)
@force_option("Replace a folder that already holds files.")
@click.option(
    "--int8", is_flag=True, help="Also quantize to int8 (guarded), bench it, compare with fp32."
)
@json_option()
@writes(
    ["json_out"],
    folders=["folder"],
    inputs=["weights"],
    defaults={"folder": lambda options: _default_run_folder()},
)
def run(json_out: str | None, force: bool, **options: Any) -> None:
    """Export, verify and bench in one go, with every artifact in one folder, and a page
    (FOLDER/report.html) that shows it all.

    Stops before the bench (exit 1) when the export does not verify.

    \b
    Examples:
      resnet-deploy run
      resnet-deploy run --variant seed --weights tutorial.pth -o seed-run
      resnet-deploy run --provider cuda --batch-sizes 1,32
      resnet-deploy run --int8
    """
    from resnet_deploy.pipeline import RunOptions, format_run, run_pipeline

    report = run_pipeline(RunOptions(force=force, **given(**options)), progress=progress)
    emit_json(report, json_out, force=force)
    if json_out != STDOUT:
        click.echo(format_run(report))
    if not report.passed:
        sys.exit(1)


@main.command("optimize")
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
@click.option("--samples", type=COUNT, help="Calibration inputs [default: 32].")
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
@click.option(
    "-o", "--output", type=OUTPUT_FILE, help="Output file [default: MODEL.PRECISION.onnx]."
)
@force_option("Overwrite an existing output file.")
@click.option("--no-guard", is_flag=True, help="Write the model without the accuracy guard.")
@click.option("--guard-samples", type=COUNT, help="Held-out inputs per shape [default: 16].")
@json_option()
@writes(
    ["output", "json_out"],
    inputs=["model", "calibration"],
    defaults={"output": lambda options: _default_optimize_output(options)},
)
def optimize(
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
        result = optimize_model(model, chosen, progress=progress)
    except GuardFailed as failed:
        emit_json(failed.result, json_out, force=force)
        if json_out != STDOUT:
            click.echo(format_result(failed.result), err=True)
        raise
    emit_json(result, json_out, force=force)
    if json_out != STDOUT:
        click.echo(format_result(result))


def _default_optimize_output(options: dict[str, Any]) -> Path:
    from resnet_deploy.convert.quantize import default_output

    return default_output(options["model"], options["precision"])


def _default_run_folder() -> Path:
    from resnet_deploy.pipeline import DEFAULT_FOLDER

    return DEFAULT_FOLDER


def endpoint_options(model: Path | None, options: dict[str, Any]) -> Any:
    """``bench``'s --url, --model-name and --concurrency (popped from ``options``) as
    EndpointOptions, or None without --url; MODEL is needed only without it."""
    from resnet_deploy.errors import InputError
    from resnet_deploy.serving.client import EndpointOptions

    url, name, concurrency = (options.pop(key) for key in ("url", "model_name", "concurrency"))
    if url is None:
        if name is not None or concurrency is not None:
            raise InputError("--model-name and --concurrency need --url")
        if model is None:
            raise InputError("give MODEL.onnx to bench, or --url of a server that serves it")
        return None
    return EndpointOptions(url=url, model_name=name, concurrency=concurrency)


def bench_url(
    model: Path | None,
    endpoint: Any,
    options: Any,
    json_out: str | None,
    csv_out: Path | None,
    plot_out: Path | None,
    force: bool,
) -> None:
    """``bench --url``: the served model, and the serving overhead when MODEL is given too."""
    from resnet_deploy.errors import InputError
    from resnet_deploy.perf.remote import bench_endpoint, format_remote
    from resnet_deploy.report.records import write_csv

    if plot_out is not None:
        raise InputError("--plot charts the in-process bench; with --url use --json or --csv")
    report = bench_endpoint(endpoint, options, model, progress=progress)
    emit_json(report, json_out, force=force)
    if csv_out is not None:
        write_csv(report.batches, csv_out, replace=force)
    if json_out != STDOUT:
        click.echo(format_remote(report))
        for out in (json_out, csv_out):
            if out is not None:
                click.echo(f"wrote {out}")
    if all(b.error is not None for b in report.batches):
        sys.exit(1)  # nothing was measured


PORT = Number(int, 0, 65535)


@main.command("serve")
@click.argument("model", type=MODEL_FILE)
@click.option("--name", default=None, help="Model name [default: as `triton` names it].")
@provider_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--http-port", type=PORT, default=8000, show_default=True)
@click.option("--grpc-port", type=PORT, default=8001, show_default=True)
@click.option("--metrics-port", type=PORT, default=8002, show_default=True)
@click.option(
    "--max-batch-size",
    type=Number(int, 0, MAX_BATCH),
    default=None,
    help="Largest batch Triton forms [default: 32; 0 for a fixed-batch model].",
)
@click.option(
    "--max-queue-delay-us", type=Number(int, 0, 2**31 - 1), default=100, show_default=True
)
@click.option(
    "--max-queue-size",
    type=Number(int, 0, 2**31 - 1),
    default=128,
    show_default=True,
    help="Requests waiting per model before new ones are rejected; 0: unbounded.",
)
@click.option(
    "--instances", type=Number(int, 1, 1024), default=1, show_default=True, help="Instances."
)
@click.option(
    "--threads",
    type=Number(int, 0, MAX_THREADS),
    default=0,
    show_default=True,
    help="Threads per instance (0: ONNX Runtime's default).",
)
@spin_option(default=False)
@click.option(
    "--top", "top_k", type=Number(int, 1, 1000), default=5, show_default=True, help="Image k."
)
@click.option(
    "--drain-timeout-s",
    type=Number(int, 0, 3600),
    default=20,
    show_default=True,
    help="On SIGINT/SIGTERM, longest wait for in-flight requests.",
)
@strict_placement_option
@json_option("Write the run's record to FILE (- for stdout) when the server stops.")
@force_option("Overwrite an existing JSON file.")
@writes(["json_out"], inputs=["model"])
def serve_command(model: Path, json_out: str | None, force: bool, **options: Any) -> None:
    """Serve an ONNX model with Triton Inference Server (KServe v2 over HTTP and gRPC).

    Serves MODEL under the name, tensors and batching `triton` writes for it, and
    NAME_image, which takes encoded images and returns the top classes. Runs until
    Ctrl-C or SIGTERM; both finish in-flight requests before exiting.

    \b
    Examples:
      resnet-deploy serve resnet50.onnx
      resnet-deploy serve resnet50-int8.onnx --instances 2 --threads 1 --max-queue-size 64
    """
    from resnet_deploy.serving.server import ServeOptions, format_endpoints, format_result, serve

    def ready(endpoints: Any, startup_s: float) -> None:
        click.echo(format_endpoints(endpoints, startup_s), err=json_out == STDOUT)
        sys.stdout.flush()

    result = serve(model, ServeOptions(**options), progress=progress, on_ready=ready)
    emit_json(result, json_out, force=force)
    if json_out != STDOUT:
        click.echo(format_result(result))


@main.command("page")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=OUTPUT_FILE, help="Page [default: FOLDER/report.html].")
@force_option("Overwrite an existing page.")
def page(folder: Path, output: Path | None, force: bool) -> None:
    """Render a run folder's page again, from its report.json and any profile or tune records.

    \b
    Examples:
      resnet-deploy page resnet-deploy-run --force
      resnet-deploy page resnet-deploy-run -o team-report.html
    """
    from resnet_deploy.report.page import write_page

    click.echo(f"wrote {write_page(folder, output=output, force=force)}")


@main.command("profile")
@click.argument("model", type=MODEL_FILE)
@click.option("--batch-size", type=Number(int, 1, MAX_BATCH), default=1, show_default=True)
@threads_option("Intra-op threads [default: physical cores].")
@click.option("--runs", type=COUNT, default=20, show_default=True, help="Profiled runs.")
@click.option("--warmup", "warmup_runs", type=Number(int, 0), default=5, show_default=True)
@click.option(
    "--compare",
    type=click.Choice(["openvino"]),
    help="Also profile the same file with OpenVINO's per-layer counters.",
)
@click.option(
    "--optimized-model",
    type=OUTPUT_FILE,
    help="Keep the graph ONNX Runtime optimized and ran in FILE.onnx.",
)
@click.option(
    "--plot", "plot_out", type=OUTPUT_FILE, help="Roofline-style plot of every Conv to FILE.png."
)
@force_option()
@json_option()
@writes(["json_out", "plot_out", "optimized_model"], inputs=["model"])
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
    from resnet_deploy.perf.profile import ProfileOptions, format_profile, profile_model, write_plot

    report = profile_model(model, ProfileOptions(force=force, **options), progress=progress)
    emit_json(report, json_out, force=force)
    if plot_out is not None:
        write_plot(report, plot_out, replace=force)
    if json_out != STDOUT:
        click.echo(format_profile(report))


@main.command("tune")
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
    "--budget-s",
    type=Number(float, 0, 24 * 3600, low_open=True),
    default=180.0,
    show_default=True,
    help="Seconds for it all.",
)
@provider_option
@click.option("--max-batch", type=Number(int, 1, MAX_BATCH), default=32, show_default=True)
@click.option(
    "--loadgen-s",
    type=Number(float, 0, 24 * 3600, low_open=True),
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
@click.option("--plot", type=OUTPUT_FILE, help="Throughput against p99 of every candidate.")
@force_option()
@json_option()
@writes(["json_out", "triton_config", "plot"], inputs=["model", "int8"])
def tune_command(model: Path, json_out: str | None, **options: Any) -> None:
    """Find the configuration to deploy under a p99 bound, judged by LoadGen's Server peak.

    \b
    Examples:
      resnet-deploy tune resnet50.onnx --int8 resnet50.int8.onnx --slo-p99-ms 15
      resnet-deploy tune resnet50.onnx --objective latency --budget-s 60 --json tune.json
    """
    from resnet_deploy.perf.tune import TuneOptions, format_report, tune

    report = tune(model, TuneOptions(**options), progress=progress)
    emit_json(report, json_out, force=options["force"])
    if json_out != STDOUT:
        click.echo(format_report(report))
    if report.winner is None:
        sys.exit(1)  # nothing met the bound
