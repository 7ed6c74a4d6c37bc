"""``bench --url``: latency and throughput of a served model, as a client sees them.

The same loop and report as the in-process bench (a warm-up apart from the timed loop, each
request timed on its own, latency as percentiles, throughput as images over the loop's wall
time), with requests sent through tritonclient in binary tensors by ``concurrency`` clients in
a closed loop. Given the model file too, the in-process bench runs the same batch sizes after
the served one, and the difference is the serving overhead: the network, serialization and the
server's scheduling. It is a per-request cost at concurrency 1; with more clients in flight the
served latency also holds the wait behind the others, and the throughput ratio is the figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.environment import Environment, describe_environment
from resnet_deploy.errors import InputError, ResnetDeployError
from resnet_deploy.model.metadata import ModelMetadata
from resnet_deploy.model.onnxfile import read_model
from resnet_deploy.perf.bench import BatchResult, BenchReport, bench
from resnet_deploy.perf.bench_options import DEFAULT_BATCH_SIZES, BenchOptions, check_options
from resnet_deploy.perf.bench_output import LATENCY_HEADERS, latency_rows
from resnet_deploy.perf.timing import (
    CV_WARNING,
    DEFAULT_DURATION_S,
    DEFAULT_WARMUP_S,
    loop_bounds,
    summarize,
    too_few_runs,
)
from resnet_deploy.report.records import format_table
from resnet_deploy.serving.client import (
    BadAnswer,
    EndpointModel,
    EndpointOptions,
    ModelClient,
    check_endpoint,
    connect,
    redact_url,
    time_requests,
)
from resnet_deploy.steps import Progress, no_progress

LOOP_LIMIT_S = 600.0  # no warm-up or timed loop runs longer, whatever --iterations asks


@dataclass
class ServingOverhead:
    """Served against in-process at one batch size; None where either side failed."""

    batch_size: int
    served_p50_ms: float | None
    in_process_p50_ms: float | None
    overhead_p50_ms: float | None  # served minus in-process, per request
    served_images_per_s: float | None
    in_process_images_per_s: float | None
    throughput_ratio: float | None  # served over in-process images/s


@dataclass
class RemoteBenchReport:
    url: str  # as messages show it (redact_url)
    model: EndpointModel  # what the endpoint says it serves
    concurrency: int
    options: BenchOptions
    environment: Environment  # the client's machine
    batches: list[BatchResult] = field(default_factory=list)
    model_file: Path | None = None  # given for the serving overhead
    model_sha256: str = ""
    metadata: ModelMetadata | None = None
    in_process: BenchReport | None = None
    overhead: list[ServingOverhead] = field(default_factory=list)


def bench_endpoint(
    endpoint: EndpointOptions,
    options: BenchOptions | None = None,
    model_path: Path | None = None,
    progress: Progress = no_progress,
) -> RemoteBenchReport:
    """Bench the served model at each batch size; with ``model_path``, the overhead too."""
    options = options or BenchOptions()
    check_options(options)
    check_endpoint(endpoint)
    model_file = None if model_path is None else read_model(model_path, require_metadata=True)
    metadata = None if model_file is None else model_file.metadata
    progress(f"reading the model's metadata from {redact_url(endpoint.url)}")
    model = connect(endpoint, default_name=metadata.arch if metadata else None)
    if metadata is not None and metadata.image_size != model.image_size:
        raise InputError(
            f"{model_path} takes {metadata.image_size}x{metadata.image_size} images, the served "
            f"{model.name} {model.image_size}x{model.image_size}: not the same model"
        )
    report = RemoteBenchReport(
        url=model.url,
        model=model,
        concurrency=endpoint.concurrency or 1,
        options=options,
        environment=describe_environment(),
        model_file=model_path,
        model_sha256=model_file.sha256 if model_file is not None else "",
        metadata=metadata,
    )
    provider = f"{model.server} over {model.protocol}"
    sizes = _batch_sizes(options.batch_sizes, model)
    progress("served batch sizes", 0, len(sizes))
    for done, batch in enumerate(sizes, 1):
        result = BatchResult(batch_size=batch, provider=provider)
        try:
            _bench_batch(report, result, endpoint.timeout_s, progress)
        except BadAnswer:  # the server answers garbage: nothing it says can be timed
            raise
        except ResnetDeployError as exc:  # one batch size refused (too large, queue full)
            result.error = str(exc)
            progress(f"batch {batch}: failed: {result.error}")
        result.warnings += _warnings(result)
        report.batches.append(result)
        progress("served batch sizes", done, len(sizes))
    if model_file is not None:
        progress("timing the same batch sizes in process, for the serving overhead")
        report.in_process = bench(
            model_file, replace(options, batch_sizes=sizes, baseline="none"), progress
        )
        report.overhead = [
            _overhead(served, local)
            for served, local in zip(report.batches, report.in_process.batches, strict=True)
        ]
    return report


def _batch_sizes(requested: tuple[int, ...] | None, model: EndpointModel) -> tuple[int, ...]:
    if model.fixed_batch is not None:
        if requested not in (None, (model.fixed_batch,)):
            raise InputError(
                f"{model.url} {model.name}: takes a fixed batch of {model.fixed_batch}; "
                f"bench batch size {model.fixed_batch} alone",
                options=["batch_sizes"],
            )
        return (model.fixed_batch,)
    limit = model.max_batch_size
    if requested is None:
        return tuple(size for size in DEFAULT_BATCH_SIZES if size <= limit) or (limit,)
    too_large = [size for size in requested if size > limit]
    if too_large:
        raise InputError(
            f"{model.url} {model.name}: batch {too_large[0]} is over its max_batch_size {limit}",
            options=["batch_sizes"],
        )
    return requested


def _bench_batch(
    report: RemoteBenchReport,
    result: BatchResult,
    timeout_s: float,
    progress: Progress,
) -> None:
    """The first request timed alone, then the warm-up, then the timed loop, as bench does."""
    model, options, batch = report.model, report.options, result.batch_size
    shape = (batch, *model.dims)
    array = np.random.default_rng(0).standard_normal(shape).astype(model.dtype)
    with ModelClient(model, timeout_s) as client:
        feed = client.place(array)
        start = time.perf_counter()
        client.infer(feed)
        result.first_inference_ms = (time.perf_counter() - start) * 1e3
    clients = report.concurrency
    progress(f"batch {batch}: warming up and timing {clients} client(s) of {model.url}")
    warmup = loop_bounds(
        options.warmup_runs, options.warmup_s, DEFAULT_WARMUP_S, limit_s=LOOP_LIMIT_S
    )
    time_requests(model, array, concurrency=clients, timeout_s=timeout_s, **warmup)
    timed = loop_bounds(
        options.iterations, options.duration_s, DEFAULT_DURATION_S, limit_s=LOOP_LIMIT_S
    )
    times, wall = time_requests(model, array, concurrency=clients, timeout_s=timeout_s, **timed)
    if not times:
        raise ResnetDeployError(f"batch {batch}: no request completed in the timed loop")
    for key, value in summarize(times, wall, batch).items():
        setattr(result, key, value)
    progress(f"batch {batch}: served p50 {result.p50_ms:.2f} ms over {result.runs} requests")


def _warnings(result: BatchResult) -> list[str]:
    notes = []
    if result.cv is not None and result.cv > CV_WARNING:
        notes.append(
            f"served latency unstable: coefficient of variation {result.cv:.2f} > {CV_WARNING} "
            "(other load on the client or server? run longer)"
        )
    return notes + ([] if result.error else too_few_runs(result.runs, "timed requests"))


def _overhead(served: BatchResult, local: BatchResult) -> ServingOverhead:
    both = served.error is None and local.error is None
    return ServingOverhead(
        batch_size=served.batch_size,
        served_p50_ms=served.p50_ms,
        in_process_p50_ms=local.p50_ms,
        overhead_p50_ms=served.p50_ms - local.p50_ms if both else None,
        served_images_per_s=served.images_per_s,
        in_process_images_per_s=local.images_per_s,
        throughput_ratio=served.images_per_s / local.images_per_s if both else None,
    )


def format_remote(report: RemoteBenchReport) -> str:
    """The terminal report: what was served where, one row per batch size, then the notes."""
    model, env = report.model, report.environment
    lines = [
        f"{report.url} {model.name}: {model.server}, platform {model.platform or '?'}, input "
        f"{model.input_name} {model.input_datatype} {list(model.dims)}, "
        f"max_batch_size {model.max_batch_size}",
        f"client: tritonclient over {model.protocol}, binary tensors, {report.concurrency} "
        f"request(s) in flight; {env.cpu_model}, {env.physical_cores} physical cores",
    ]
    if report.in_process is not None:
        local = report.in_process
        lines.append(
            f"in process: {report.model_file} ({local.metadata.arch}, {local.input_dtype}), "
            f"{local.provider}, {local.threads} threads"
        )
    headers = list(LATENCY_HEADERS)
    by_batch = {o.batch_size: o for o in report.overhead}
    if by_batch:
        headers += ["in-process p50 ms", "overhead p50 ms", "in-process images/s", "served/in"]

    def beside(b: BatchResult) -> list[Any]:
        if not by_batch:
            return []
        o = by_batch[b.batch_size]
        return [
            o.in_process_p50_ms,
            o.overhead_p50_ms,
            o.in_process_images_per_s,
            o.throughput_ratio,
        ]

    rows, notes = latency_rows(report.batches, beside)
    if rows:
        lines += ["", format_table(headers, rows)]
    if by_batch and report.concurrency > 1:
        notes.append(
            f"at {report.concurrency} clients the served latency includes waiting behind the "
            "others: read the per-request overhead at --concurrency 1"
        )
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
