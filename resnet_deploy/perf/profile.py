"""Profile: where ONNX Runtime spends its time, layer by layer, against this CPU's own peak.

ONNX Runtime's profiler times every kernel of the graph it actually runs (the one its graph
optimizer produced, saved here through ``optimized_model_filepath``). Kernels are named after
the optimized nodes, so each is mapped back to the PyTorch module it computes through the
weights it reads (``profile_graph``); a residual add is named after its block, as
``--localize`` names block outputs.

Each Conv's work (2 x multiply-accumulates) over its time is set against the machine's peak
for that precision, measured in the same run (``peak``).

``compare="openvino"`` runs the same file through OpenVINO with its per-layer counters on;
OpenVINO names its layers after the ONNX nodes they came from, mapped to modules the same way.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from resnet_deploy.environment import Environment, describe_environment, physical_cores
from resnet_deploy.errors import InputError
from resnet_deploy.files import write_bytes_atomic
from resnet_deploy.model.metadata import ModelMetadata
from resnet_deploy.model.onnxfile import read_model
from resnet_deploy.perf.contention import Contention, CpuMonitor
from resnet_deploy.perf.peak import PEAK_SIZE, Peak, measure_peak
from resnet_deploy.perf.profile_graph import GraphCheck, check_graph, conv_work, layer_names
from resnet_deploy.report.records import format_table
from resnet_deploy.runtime.names import SPINNING
from resnet_deploy.runtime.openvino import import_openvino, inference_precision
from resnet_deploy.runtime.providers import (
    SessionConfig,
    captured_stderr,
    create_session,
    input_dtype,
)
from resnet_deploy.steps import Progress, no_progress

COMPARES = ("openvino",)


@dataclass(frozen=True)
class ProfileOptions:
    batch_size: int = 1
    threads: int | None = None  # None: the physical cores
    runs: int = 20  # profiled runs, after the warm-up
    warmup_runs: int = 5
    compare: str | None = None  # "openvino": its per-layer counters beside ONNX Runtime's
    optimized_model: Path | None = None  # keep the graph ONNX Runtime ran here
    force: bool = False  # replace an existing optimized_model file


@dataclass
class LayerTime:
    """One PyTorch module (or graph node no module owns): its mean time per run."""

    layer: str
    kernels: list[str]  # the op types ONNX Runtime ran for it
    ms: float
    share: float  # of the summed kernel time
    gop: float | None = None  # 2 x multiply-accumulates per run, Conv and Gemm layers
    gops_per_s: float | None = None
    peak_fraction: float | None = None
    ops_per_byte: float | None = None  # operations over bytes of input, weights and output
    openvino_ms: float | None = None
    openvino_kernels: list[str] = field(default_factory=list)


@dataclass
class OpTypeTime:
    op_type: str
    nodes: int
    ms: float
    share: float


@dataclass
class OpenVinoProfile:
    version: str
    device: str
    inference_precision: str  # what OpenVINO chose for float layers (bf16 on some CPUs)
    total_ms: float  # summed layer time per run
    kernels: dict[str, int]  # OpenVINO's kernel (exec type) -> layers using it


@dataclass
class ProfileReport:
    model: Path
    model_sha256: str
    metadata: ModelMetadata
    precision: str
    batch_size: int
    threads: int
    runs: int
    run_ms: float  # mean time of a whole run, as ONNX Runtime's profiler states it
    kernel_ms: float  # summed kernel time per run
    peak: Peak
    graph: GraphCheck
    layers: list[LayerTime]
    op_types: list[OpTypeTime]
    contention: Contention
    environment: Environment
    openvino: OpenVinoProfile | None = None
    warnings: list[str] = field(default_factory=list)


def profile_model(
    path: Path,
    options: ProfileOptions = ProfileOptions(),
    progress: Progress = no_progress,
) -> ProfileReport:
    """Profile ``options.runs`` runs of the model at one batch size; see the module docstring."""
    if options.batch_size < 1:
        raise InputError(
            f"the batch size must be at least 1, got {options.batch_size}", options=["batch_size"]
        )
    if options.runs < 1:
        raise InputError(f"profiling needs at least one run, got {options.runs}", options=["runs"])
    if options.warmup_runs < 0:
        raise InputError(
            f"the warm-up runs cannot be negative, got {options.warmup_runs}",
            options=["warmup_runs"],
        )
    if options.threads is not None and options.threads < 1:
        raise InputError(f"threads must be at least 1, got {options.threads}", options=["threads"])
    if options.compare is not None and options.compare not in COMPARES:
        raise InputError(
            f"unknown engine to compare with {options.compare!r}; only {', '.join(COMPARES)}"
            " is known",
            options=["compare"],
        )
    if options.compare == "openvino":
        import_openvino()
    model = read_model(path, require_metadata=True)
    path, original, metadata = model.path, model.proto, model.metadata
    if metadata.batch != "dynamic" and int(metadata.batch) != options.batch_size:
        raise InputError(
            f"{path}: has a fixed batch of {metadata.batch}; "
            f"profile it at batch size {metadata.batch}",
            options=["batch_size"],
        )
    threads = options.threads or physical_cores()
    precision = metadata.precision
    progress(f"measuring this machine's peak: {PEAK_SIZE}^3 GEMM, {precision}, {threads} threads")
    peak = measure_peak(precision, threads)
    work = conv_work(original, options.batch_size, precision)
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-profile-") as folder:
        optimized_path = Path(folder) / "optimized.onnx"
        progress(f"profiling {options.runs} runs of ONNX Runtime at batch {options.batch_size}")
        events, contention = _ort_events(
            path, options, threads, metadata.image_size, optimized_path, folder, progress
        )
        optimized = onnx.load(str(optimized_path), load_external_data=False)
        if options.optimized_model is not None:
            write_bytes_atomic(
                options.optimized_model, optimized_path.read_bytes(), replace=options.force
            )
    layer_of = layer_names(optimized)
    graph = check_graph(optimized, precision)
    per_layer: dict[str, float] = defaultdict(float)
    kernels: dict[str, set[str]] = defaultdict(set)
    per_op: dict[str, list] = defaultdict(lambda: [set(), 0.0])
    run_us = []
    for event in events:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            run_us.append(event["dur"])
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        node = event["name"].removesuffix("_kernel_time")
        op = event.get("args", {}).get("op_name", "?")
        layer = layer_of.get(node, node)
        per_layer[layer] += event["dur"] / 1e3 / options.runs
        kernels[layer].add(op)
        per_op[op][0].add(node)
        per_op[op][1] += event["dur"] / 1e3 / options.runs
    total = sum(per_layer.values()) or 1.0
    layers = []
    for name, ms in per_layer.items():
        layer = LayerTime(name, sorted(kernels[name]), ms, ms / total)
        if name in work:
            gop, moved = work[name]
            layer.gop = gop
            layer.gops_per_s = gop / (ms / 1e3)
            layer.peak_fraction = layer.gops_per_s / peak.gops_per_s
            layer.ops_per_byte = gop * 1e9 / moved
        layers.append(layer)
    op_types = [OpTypeTime(op, len(nodes), ms, ms / total) for op, (nodes, ms) in per_op.items()]
    report = ProfileReport(
        model=path,
        model_sha256=model.sha256,
        metadata=metadata,
        precision=precision,
        batch_size=options.batch_size,
        threads=threads,
        runs=options.runs,
        run_ms=float(np.mean(run_us[-options.runs :])) / 1e3 if run_us else total,
        kernel_ms=total,
        peak=peak,
        graph=graph,
        layers=layers,
        op_types=sorted(op_types, key=lambda o: -o.ms),
        contention=contention,
        environment=describe_environment(),
    )
    if options.compare == "openvino":
        progress(f"profiling {options.runs} runs of OpenVINO on the same file")
        report.openvino = _openvino_layers(path, original, options, threads, report.layers)
    if graph.float_convs or graph.float_adds or graph.float_islands:
        report.warnings.append(
            "int8 graph not fully quantized: "
            + "; ".join(
                f"{what}: {', '.join(names)}"
                for what, names in (
                    ("float convs", graph.float_convs),
                    ("float adds", graph.float_adds),
                    ("float islands", graph.float_islands),
                )
                if names
            )
        )
    if contention.unreliable:
        report.warnings.append(contention.message())
    return report


def _ort_events(
    path: Path,
    options: ProfileOptions,
    threads: int,
    image_size: int,
    optimized: Path,
    folder: str,
    progress: Progress,
) -> tuple[list[dict], Contention]:
    config = SessionConfig(
        provider="cpu",
        intra_op_threads=threads,
        graph_optimization="all",
        session_config_entries={SPINNING: "1"},
        profile_prefix=str(Path(folder) / "ort-profile"),
        optimized_model_path=optimized,
    )
    with captured_stderr():  # ONNX Runtime warns that the saved graph is hardware-specific
        session = create_session(path, config)
    size = image_size
    batch = np.random.default_rng(0).standard_normal((options.batch_size, 3, size, size))
    feed = {session.get_inputs()[0].name: batch.astype(input_dtype(session))}
    total = options.warmup_runs + options.runs
    progress("runs, the warm-up first", 0, total)
    with CpuMonitor() as monitor:  # the warm-up is profiled too, and its events dropped below
        for done in range(1, total + 1):
            session.run(None, feed)
            progress("runs, the warm-up first", done, total)
    with open(session.end_profiling()) as file:
        events = json.load(file)
    runs = sorted(
        e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    start = runs[options.warmup_runs] if len(runs) > options.warmup_runs else 0
    return [e for e in events if e.get("ts", 0) >= start], monitor.result


def _openvino_layers(
    path: Path,
    original: onnx.ModelProto,
    options: ProfileOptions,
    threads: int,
    layers: list[LayerTime],
) -> OpenVinoProfile:
    """OpenVINO's per-layer counters for the same file, batch and threads, added to ``layers``."""
    openvino = import_openvino()
    core = openvino.Core()
    model = core.read_model(str(path))
    size = original.graph.input[0].type.tensor_type.shape.dim[-1].dim_value or 224
    model.reshape([options.batch_size, 3, size, size])
    compiled = core.compile_model(
        model,
        "CPU",
        {"PERF_COUNT": True, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"},
    )
    request = compiled.create_infer_request()
    batch = np.random.default_rng(0).standard_normal((options.batch_size, 3, size, size))
    batch = batch.astype(np.float32)
    for _ in range(options.warmup_runs):
        request.infer({0: batch})
    layer_of = layer_names(original)
    per_layer: dict[str, float] = defaultdict(float)
    kernels: dict[str, set[str]] = defaultdict(set)
    exec_types: dict[str, int] = defaultdict(int)
    for run in range(options.runs):
        request.infer({0: batch})
        for info in request.get_profiling_info():
            if info.status != info.Status.EXECUTED:
                continue
            node = info.node_name.split("/")[0]
            layer = layer_of.get(node, node)
            per_layer[layer] += info.real_time.total_seconds() * 1e3 / options.runs
            kernels[layer].add(info.exec_type)
            if run == 0:
                exec_types[info.exec_type] += 1
    by_name = {layer.layer: layer for layer in layers}
    for name, ms in per_layer.items():
        if name not in by_name:
            by_name[name] = LayerTime(name, [], 0.0, 0.0)
            layers.append(by_name[name])
        by_name[name].openvino_ms = ms
        by_name[name].openvino_kernels = sorted(kernels[name])
    precision = inference_precision(compiled)
    total = sum(per_layer.values())
    return OpenVinoProfile(openvino.__version__, "CPU", precision, total, dict(exec_types))


def format_profile(report: ProfileReport, top: int | None = None) -> str:
    """Header, the graph check, layers in graph order, then op types."""
    meta, peak = report.metadata, report.peak
    lines = [
        f"{report.model}: {meta.arch} {report.precision}, batch {report.batch_size}, "
        f"{report.threads} threads, {report.runs} profiled runs",
        f"run {report.run_ms:.2f} ms (kernels {report.kernel_ms:.2f} ms); peak {peak.kind} "
        f"{peak.gops_per_s:.0f} G{'OP' if report.precision == 'int8' else 'FLOP'}/s, "
        f"copy {peak.bandwidth_gb_per_s:.1f} GB/s",
        "graph ONNX Runtime runs: "
        + ", ".join(f"{op} {n}" for op, n in sorted(report.graph.ops.items(), key=lambda i: -i[1])),
    ]
    if report.precision == "int8":
        lines.append(
            "every Conv and Add quantized, no float islands"
            if report.graph.fused
            else "NOT fully quantized (see below)"
        )
    ov = report.openvino
    headers = ["layer", "kernels", "ms", "share", "G/s", "of peak"]
    if ov is not None:
        headers += ["openvino ms", "ort/ov"]
    rows = []
    for layer in report.layers[:top] if top else report.layers:
        row = [
            layer.layer,
            ",".join(layer.kernels) or "-",
            layer.ms,
            f"{100 * layer.share:.1f}%",
            "-" if layer.gops_per_s is None else layer.gops_per_s,
            "-" if layer.peak_fraction is None else f"{100 * layer.peak_fraction:.0f}%",
        ]
        if ov is not None:
            both = layer.openvino_ms and layer.ms
            row += [
                "-" if layer.openvino_ms is None else layer.openvino_ms,
                f"{layer.ms / layer.openvino_ms:.2f}" if both else "-",
            ]
        rows.append(row)
    lines += ["", format_table(headers, rows)]
    op_rows = [[o.op_type, o.nodes, o.ms, f"{100 * o.share:.1f}%"] for o in report.op_types]
    lines += ["", format_table(["op type", "nodes", "ms", "share"], op_rows)]
    if ov is not None:
        lines.append(
            f"\nOpenVINO {ov.version} ({ov.inference_precision} float layers): {ov.total_ms:.2f} "
            "ms of layers per run against ONNX "
            f"Runtime's {report.kernel_ms:.2f} ms; kernels: "
            + ", ".join(f"{k} {n}" for k, n in sorted(ov.kernels.items(), key=lambda i: -i[1]))
        )
    lines.append(report.contention.describe())
    if report.warnings:
        lines += ["", *report.warnings]
    return "\n".join(lines)


def write_plot(report: ProfileReport, path: Path, *, replace: bool = False) -> None:
    """Roofline-style: each Conv's achieved rate against its operations per byte, under the
    measured GEMM peak and copy bandwidth."""
    from resnet_deploy.report.charts import OPENVINO, Layer, Series, roofline_png

    convs = [layer for layer in report.layers if layer.gops_per_s is not None]
    if not convs:
        raise InputError("nothing to plot: no Conv or Gemm layer was matched to a module")
    with_ov = [layer for layer in convs if layer.openvino_ms]
    compare = Series(
        "OpenVINO, same layers",
        [layer.ops_per_byte for layer in with_ov],
        [layer.gop / (layer.openvino_ms / 1e3) for layer in with_ov],
        OPENVINO,
    )
    title = (
        f"{report.model.name} ({report.metadata.arch}, {report.precision}), batch "
        f"{report.batch_size}, {report.threads} threads; marker area = share of time"
    )
    if report.contention.unreliable:
        title += "\n" + report.contention.message()
    roofline_png(
        path,
        layers=[Layer(c.layer, c.ops_per_byte, c.gops_per_s, c.share) for c in convs],
        peak=report.peak.gops_per_s,
        bandwidth=report.peak.bandwidth_gb_per_s,
        roof=f"roof: {report.peak.kind}, copy",
        compare=compare if with_ov else None,
        unit="GOP/s" if report.precision == "int8" else "GFLOP/s",
        title=title,
        replace=replace,
    )
