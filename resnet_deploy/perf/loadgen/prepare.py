"""Before LoadGen starts: the system under test, the sample library, and the speeds measured
on them that the defaults and LoadGen's hints come from; every test of one call shares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.data.images import list_images
from resnet_deploy.errors import InputError
from resnet_deploy.model.labels import NUM_IMAGENET_CLASSES
from resnet_deploy.model.metadata import IMAGENET_MEAN, IMAGENET_STD, ModelMetadata
from resnet_deploy.model.onnxfile import ModelFile
from resnet_deploy.perf.bench_options import check_options, session_config
from resnet_deploy.perf.loadgen.options import (
    CALIBRATION_S,
    DEFAULT_BATCH_TIMEOUT_MS,
    DEFAULT_MAX_BATCH,
    GENERATED_SAMPLES,
    MULTISTREAM_SAMPLES,
    REMOTE_CONCURRENCY,
    REMOTE_MAX_BATCH,
    ScenarioOptions,
)
from resnet_deploy.perf.loadgen.samples import Preprocessing, SampleLibrary, read_labels
from resnet_deploy.perf.loadgen.sut import InProcess, Remote
from resnet_deploy.runtime.int8target import require_target
from resnet_deploy.runtime.names import CUDA, TENSORRT
from resnet_deploy.runtime.providers import create_session, input_dtype, tensorrt_build_note
from resnet_deploy.runtime.runners import OrtRunner
from resnet_deploy.serving.client import EndpointOptions, connect
from resnet_deploy.steps import Progress


@dataclass
class Prepared:
    """What every LoadGen test of one call shares: the system, samples and measured speeds."""

    lg: Any
    model: ModelFile | None  # the file: run in process, or read to describe a served model
    provider: str
    threads: int | None
    instances: int | None
    system: InProcess | Remote
    endpoint: str | None  # URL and model name of a served model
    concurrency: int | None
    library: SampleLibrary
    labels: list[int] | None
    source: str
    scenario: str
    max_batch: int
    pad_to: int | None  # every batch padded to this warmed size (None: run as formed)
    warmed: list[int]  # batch sizes run before LoadGen started
    timeout_s: float
    batch_latency_ms: float  # median time of one batch of max_batch
    throughput_per_s: float  # samples/s at max_batch, every instance at once
    single_latency_ms: float  # median time of one sample alone


@dataclass
class _System:
    """What ``prepare`` needs to know about the system under test before it runs."""

    system: InProcess | Remote
    provider: str
    threads: int | None
    instances: int | None  # in-process sessions; None for a served model
    dtype: np.dtype
    classes: int | None
    image_size: int
    fixed_batch: int | None = None  # a served model's: the file says it in process
    batch_limit: int | None = None  # the largest batch a served model accepts
    endpoint: str | None = None
    concurrency: int | None = None


def prepare(
    lg: Any,
    model: ModelFile | None,
    scenario: str,
    options: ScenarioOptions,
    progress: Progress,
) -> Prepared:
    """System, sample library and the timings the defaults and LoadGen's hints come from."""
    metadata = None if model is None else model.metadata
    if options.endpoint is None:
        path = model.path
        fixed = None if metadata.batch == "dynamic" else int(metadata.batch)
        max_batch = _max_batch(options, scenario, path, fixed, None)
        provider = check_options(options.engine)
        # refuses an int8 file made for other CPUs, or warns
        for warning in require_target(model.proto, metadata, provider, name=str(path)):
            progress(f"warning: {warning}")
        found = _in_process(model, max_batch, options, provider, progress)
    else:
        found = _remote(options.endpoint, metadata, progress)
        fixed = found.fixed_batch
        max_batch = _max_batch(options, scenario, options.endpoint.url, fixed, found.batch_limit)
    images = labels = None
    if options.images is not None:
        images = list_images(options.images)[: options.samples]
        if options.accuracy:
            classes = found.classes if isinstance(found.classes, int) else NUM_IMAGENET_CLASSES
            labels = read_labels(images, Path(options.images), options.labels, classes)
        source = f"{options.images} ({len(images)} images)"
    else:
        generated = options.samples or GENERATED_SAMPLES[options.official]
        source = f"generated inputs ({generated}, standard normal)"
    if metadata is not None:
        preprocessing = Preprocessing(metadata.image_size, metadata.mean, metadata.std)
    else:
        preprocessing = Preprocessing(found.image_size, IMAGENET_MEAN, IMAGENET_STD)
    count = len(images) if images else generated
    library = SampleLibrary(preprocessing, found.dtype, images, count)
    if scenario == "Server" and options.endpoint is None:
        timeout_ms = options.batch_timeout_ms
        timeout_s = (DEFAULT_BATCH_TIMEOUT_MS if timeout_ms is None else timeout_ms) / 1e3
    else:
        timeout_s = 0.0  # a query's samples arrive together, or the server batches them
    warmed, pad_to = _batch_plan(scenario, max_batch, fixed, remote=options.endpoint is not None)
    progress(f"warming up batch sizes {_sizes(warmed)} and timing batch {max_batch}")
    batch_stats, single_stats = _calibrate(
        found.system, preprocessing, found.dtype, max_batch, warmed, fixed, found.instances or 1
    )
    return Prepared(
        lg=lg,
        model=model,
        provider=found.provider,
        threads=found.threads,
        instances=found.instances,
        system=found.system,
        endpoint=found.endpoint,
        concurrency=found.concurrency,
        library=library,
        labels=labels,
        source=source,
        scenario=scenario,
        max_batch=max_batch,
        pad_to=pad_to,
        warmed=warmed,
        timeout_s=timeout_s,
        batch_latency_ms=batch_stats["p50_ms"],
        throughput_per_s=batch_stats["images_per_s"],
        single_latency_ms=single_stats["p50_ms"],
    )


def _max_batch(
    options: ScenarioOptions, scenario: str, where: object, fixed: int | None, limit: int | None
) -> int:
    """The largest batch the SUT runs (or sends): asked for, else the scenario's default."""
    defaults = DEFAULT_MAX_BATCH if options.endpoint is None else REMOTE_MAX_BATCH
    max_batch = options.max_batch or fixed or defaults[scenario]
    if limit is not None:
        max_batch = min(max_batch, limit) if options.max_batch is None else max_batch
    if fixed is not None and max_batch != fixed:
        raise InputError(
            f"{where}: has a fixed batch of {fixed}; use a largest batch of {fixed}, "
            "or export it again with a dynamic batch",
            options=["max_batch"],
        )
    if limit is not None and max_batch > limit:
        raise InputError(
            f"{where}: the largest batch {max_batch} is over its max_batch_size {limit}",
            options=["max_batch"],
        )
    return max_batch


def _in_process(
    model: ModelFile,
    max_batch: int,
    options: ScenarioOptions,
    provider: str,
    progress: Progress,
) -> _System:
    """The sessions LoadGen's queries run on, one per instance; TensorRT gets one profile for
    batches 1 to the largest, so no engine is rebuilt while LoadGen times."""
    engine, path, metadata = options.engine, model.path, model.metadata
    config = session_config(
        provider, engine, metadata=metadata, model_sha256=model.sha256, batch_sizes=(1, max_batch)
    )
    count = options.instances
    progress(f"creating the {provider} session" + (f"s of {count} instances" if count > 1 else ""))
    note = tensorrt_build_note(config)
    if note:
        progress(note)
    on_gpu = provider in (CUDA, TENSORRT) and engine.io_binding
    runners = [
        OrtRunner(create_session(path, config), binding_device="cuda" if on_gpu else None)
        for _ in range(count)
    ]
    session = runners[0].session
    classes = session.get_outputs()[0].shape[-1]
    return _System(
        system=InProcess(runners),
        provider=provider,
        threads=config.intra_op_threads,
        instances=count,
        dtype=input_dtype(session),
        classes=classes if isinstance(classes, int) else None,
        image_size=metadata.image_size,
    )


def _remote(
    options: EndpointOptions, metadata: ModelMetadata | None, progress: Progress
) -> _System:
    progress(f"reading the model's metadata from {options.url}")
    model = connect(options, default_name=metadata.arch if metadata else None)
    concurrency = options.concurrency or REMOTE_CONCURRENCY
    return _System(
        system=Remote(model, concurrency=concurrency, timeout_s=options.timeout_s),
        provider=f"{model.server} over {model.protocol}",
        threads=None,
        instances=None,
        dtype=model.dtype,
        classes=None,
        image_size=model.image_size,
        fixed_batch=model.fixed_batch,
        batch_limit=model.max_batch_size or None,
        endpoint=f"{model.url} {model.name}",
        concurrency=concurrency,
    )


def _batch_plan(
    scenario: str, max_batch: int, fixed: int | None, *, remote: bool
) -> tuple[list[int], int | None]:
    """The batch sizes to run before LoadGen starts, and the size every batch is padded to.

    A shape's first run is slow (cuDNN's exhaustive search, a TensorRT engine build) and must
    not land in LoadGen's figures, so every batch size the SUT will run is warmed up. Server
    forms every size up to max_batch; MultiStream's query of 8 splits into known sizes; but
    Offline's one query holds as many samples as LoadGen decides, so its last, short batch is
    padded to the warmed max_batch instead (the padding's answers are dropped). A served
    model's server forms its own batches, so nothing is padded for it.
    """
    if fixed is not None:
        return [fixed], fixed
    if scenario == "Server":
        return list(range(1, max_batch + 1)), None
    if scenario == "MultiStream":
        rest = MULTISTREAM_SAMPLES % max_batch
        return sorted({min(max_batch, MULTISTREAM_SAMPLES), *([rest] if rest else [])}), None
    if scenario == "Offline":
        return [max_batch], None if remote else max_batch
    return [1], None  # SingleStream: one sample per query


def _calibrate(
    system: InProcess | Remote,
    preprocessing: Preprocessing,
    dtype: np.dtype,
    max_batch: int,
    warmed: list[int],
    fixed: int | None,
    instances: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """Run every batch size the SUT will form once, then time max_batch (every instance at
    once) and a single sample (alone)."""
    size = preprocessing.image_size
    shape = (max(max_batch, *warmed), 3, size, size)
    array = np.random.default_rng(0).standard_normal(shape, dtype=np.float32).astype(dtype)
    for batch in warmed:
        system.warm(array[:batch])
    batch_stats = system.time(array[:max_batch], CALIBRATION_S, alone=False)
    if (max_batch == 1 and instances == 1) or fixed is not None:  # fixed: a lone one padded
        return batch_stats, batch_stats
    return batch_stats, system.time(array[:1], CALIBRATION_S / 2, alone=True)


def _sizes(sizes: list[int]) -> str:
    if len(sizes) > 2 and sizes == list(range(1, sizes[-1] + 1)):
        return f"1 to {sizes[-1]}"
    return ", ".join(map(str, sizes))
