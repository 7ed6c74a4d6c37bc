"""``resnet-deploy bench``: latency and throughput, by one of three paths behind one command.

The latency loop over batch sizes (``perf.bench``), an MLPerf LoadGen scenario (``--scenario``,
``perf.loadgen``), or a served model (``--url``, ``perf.remote``); ``--url --scenario`` has
LoadGen drive the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from resnet_deploy.cli.options import (
    COUNT,
    MODEL_FILE,
    NON_NEGATIVE,
    OUTPUT_FILE,
    OUTPUT_FOLDER,
    POSITIVE,
    Number,
    baseline_option,
    batch_sizes_option,
    compare_option,
    duration_option,
    force_option,
    instances_option,
    json_option,
    max_batch_option,
    plot_option,
    provider_option,
    samples_option,
    spin_option,
    strict_placement_option,
    threads_option,
    warmup_option,
)
from resnet_deploy.cli.output import finish, reporting, writes
from resnet_deploy.runtime.names import CUDNN_ALGOS

# LoadGen schedules every query of a run up front; past this rate no machine keeps up, and the
# schedule alone outgrows memory (the library checks the query count against memory as well).
MAX_TARGET_QPS = 1_000_000

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


@click.command("bench")
@click.argument("model", required=False, type=MODEL_FILE)
@provider_option
@batch_sizes_option(
    "Comma-separated [default: 1,8,32, or the batch a fixed-batch model was exported with]."
)
@warmup_option("Warm-up runs per batch size.")
@click.option("--warmup-s", type=NON_NEGATIVE, help="Warm-up seconds per batch size [default: 2].")
@click.option("--iterations", type=COUNT, help="Timed runs per batch size.")
@duration_option("Timed seconds per batch [5].")
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
@baseline_option("Also time PyTorch eager, rebuilt from the model's metadata.", default="torch")
@compare_option("Also time OpenVINO on the same file, batch and threads (pip install openvino).")
@json_option()
@click.option("--csv", "csv_out", type=OUTPUT_FILE, help="Write one row per batch size to FILE.")
@plot_option("Plot latency and throughput against batch size to FILE.png.")
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
@samples_option("Scenario: generated inputs [64], or images used [all].")
@click.option(
    "--images",
    type=click.Path(path_type=Path),
    help="Scenario: image folder to serve (class-index subfolders 0/ ... 999/ label it).",
)
@click.option(
    "--labels", type=click.Path(path_type=Path), help="Scenario: 'name<TAB>class' lines instead."
)
@click.option("--accuracy", is_flag=True, help="Scenario: LoadGen's accuracy mode, top-1.")
@max_batch_option("Scenario: largest batch [1, 8, 8, 32].")
@click.option(
    "--batch-timeout-ms", type=Number(float, 0, 60_000), help="Server: most a sample waits [2]."
)
@instances_option(
    "Scenario: sessions sharing the queue, a worker thread each, --threads apiece [1]."
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
def command(
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
    from resnet_deploy.perf.bench import BenchOptions, bench
    from resnet_deploy.perf.bench_output import summary, write_plot
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
    with reporting(json_out) as progress:
        report = bench(model, engine, progress=progress)
    finish(
        report,
        json_out,
        force,
        files=[
            (csv_out, lambda r, path: write_csv(r.batches, path, replace=force)),
            (plot_out, lambda r, path: write_plot(r, path, replace=force)),
        ],
        text=summary,
        wrote=(json_out, csv_out, plot_out),
        failed=all(b.error is not None for b in report.batches),  # nothing was measured
    )


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
    with reporting(json_out) as progress:
        report = bench_endpoint(endpoint, options, model, progress=progress)
    finish(
        report,
        json_out,
        force,
        files=[(csv_out, lambda r, path: write_csv(r.batches, path, replace=force))],
        text=format_remote,
        wrote=(json_out, csv_out),
        failed=all(b.error is not None for b in report.batches),  # nothing was measured
    )


def bench_scenario(
    model: Path | None,
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
    with reporting(json_out) as progress:
        result = run_scenario(model, options, progress=progress)
    finish(result, json_out, force, text=format_result, wrote=(json_out,))
