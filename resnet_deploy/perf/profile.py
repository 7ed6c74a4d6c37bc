"""Profile: where ONNX Runtime spends its time, layer by layer, against this CPU's own peak.

ONNX Runtime's profiler times every kernel of the graph it actually runs (the one its graph
optimizer produced, saved here through ``optimized_model_filepath``). Kernels are named after
the optimized nodes, so each is mapped back to the PyTorch module it computes through the
weights it reads: the exporter names a Conv's weight after the parameter
(``layer3.2.conv2.weight``), and ONNX Runtime keeps that name in the quantized weight
(``..._quantized``) or the folded bias (``..._bias``) of the fused node. A residual add is
named after its block (``layer3.2 add``), as ``--localize`` names block outputs.

Each Conv's work (2 x multiply-accumulates) over its time is set against the machine's peak
for that precision, measured in the same run with one large GEMM of the same kind (fp32
MatMul, or u8 x s8 MatMulInteger for int8), so "60% of peak" needs no datasheet.

``compare="openvino"`` runs the same file through OpenVINO with its per-layer counters on;
OpenVINO names its layers after the ONNX nodes they came from, mapped to modules the same way.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from resnet_deploy.environment import Environment, describe_environment, physical_cores
from resnet_deploy.errors import InputError
from resnet_deploy.files import atomic_output, sha256_of, write_bytes_atomic
from resnet_deploy.model.metadata import ModelMetadata
from resnet_deploy.model.onnxfile import load_with_metadata
from resnet_deploy.perf.contention import Contention, CpuMonitor
from resnet_deploy.report.records import format_table
from resnet_deploy.runtime.names import SPINNING
from resnet_deploy.runtime.openvino import import_openvino, inference_precision
from resnet_deploy.runtime.providers import (
    SessionConfig,
    captured_stderr,
    create_session,
    input_dtype,
)

COMPARES = ("openvino",)
PEAK_SIZE = 1024  # the GEMM measuring the peak: M = N = K
PEAK_S = 1.0
BANDWIDTH_BYTES = 1 << 27  # a copy far larger than any cache
_PARAMETER = re.compile(
    r"^([A-Za-z_][\w.]*?)\.(?:weight|bias)(?:_quantized|_bias|_scale|_zero_point)?$"
)
# Ops that move, quantize or reshape data rather than compute in float.
_QUANTIZED = {"QuantizeLinear", "DequantizeLinear", "Transpose", "Reshape", "Flatten", "Squeeze"}
_POOLS = {
    "MaxPool": "maxpool",
    "NhwcMaxPool": "maxpool",
    "ReduceMean": "avgpool",
    "GlobalAveragePool": "avgpool",
    "QLinearGlobalAveragePool": "avgpool",
}


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
class Peak:
    """The best this machine did on one large GEMM of the model's precision, in this run."""

    kind: str  # "fp32 MatMul" or "u8 x s8 MatMulInteger"
    gops_per_s: float
    bandwidth_gb_per_s: float  # a large memory copy: the roof for layers with little reuse


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
class GraphCheck:
    """What the optimized graph runs: for int8, every Conv and Add quantized, nothing in float."""

    ops: dict[str, int]
    float_convs: list[str]  # Conv nodes left in float in an int8 model
    float_adds: list[str]  # Add nodes neither quantized nor fused into a conv
    float_islands: list[str]  # float nodes between a DequantizeLinear and a QuantizeLinear
    fused: bool  # int8: all three lists empty


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
    progress: Callable[[str], None] = lambda step: None,
) -> ProfileReport:
    """Profile ``options.runs`` runs of the model at one batch size; see the module docstring."""
    if options.batch_size < 1 or options.runs < 1 or options.warmup_runs < 0:
        raise InputError("--batch-size and --runs must be at least 1, --warmup at least 0")
    if options.threads is not None and options.threads < 1:
        raise InputError(f"threads must be at least 1, got {options.threads}")
    if options.compare is not None and options.compare not in COMPARES:
        raise InputError(f"--compare {options.compare}: only {', '.join(COMPARES)} is known")
    if options.compare == "openvino":
        import_openvino()
    path = Path(path)
    original, metadata = load_with_metadata(path)
    if metadata.batch != "dynamic" and int(metadata.batch) != options.batch_size:
        raise InputError(
            f"{path}: has a fixed batch of {metadata.batch}; "
            f"profile it with --batch-size {metadata.batch}"
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
            path, options, threads, metadata.image_size, optimized_path, folder
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
        model_sha256=sha256_of(path),
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
    with CpuMonitor() as monitor:  # the warm-up is profiled too, and its events dropped below
        for _ in range(options.warmup_runs + options.runs):
            session.run(None, feed)
    with open(session.end_profiling()) as file:
        events = json.load(file)
    runs = sorted(
        e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    start = runs[options.warmup_runs] if len(runs) > options.warmup_runs else 0
    return [e for e in events if e.get("ts", 0) >= start], monitor.result


def measure_peak(precision: str, threads: int, seconds: float = PEAK_S) -> Peak:
    """The GEMM rate (GFLOP/s, or GOP/s for int8) and a copy's bandwidth on this machine."""
    n = PEAK_SIZE
    if precision == "int8":
        kind = "u8 x s8 MatMulInteger"
        a_type, out_type = onnx.TensorProto.UINT8, onnx.TensorProto.INT32
        node = helper.make_node("MatMulInteger", ["A", "B"], ["C"])
        a = np.random.default_rng(0).integers(0, 255, (n, n), dtype=np.uint8)
        b = np.random.default_rng(1).integers(-127, 127, (n, n), dtype=np.int8)
    else:  # fp16 files too: the CPU's float peak, the one a GEMM kernel of ONNX Runtime reaches
        dtype = np.float32
        kind = "fp32 MatMul"
        a_type = out_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        node = helper.make_node("MatMul", ["A", "B"], ["C"])
        a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
        b = np.random.default_rng(1).standard_normal((n, n)).astype(dtype)
    graph = helper.make_graph(
        [node],
        "peak",
        [helper.make_tensor_value_info("A", a_type, [n, n])],
        [helper.make_tensor_value_info("C", out_type, [n, n])],
        [numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    config = SessionConfig("cpu", intra_op_threads=threads, session_config_entries={SPINNING: "1"})
    session = create_session(model.SerializeToString(), config)
    session.run(None, {"A": a})
    best = float("inf")
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        begin = time.perf_counter()
        session.run(None, {"A": a})
        best = min(best, time.perf_counter() - begin)
    source = np.ones(BANDWIDTH_BYTES // 8)
    target = np.empty_like(source)
    copy_s = float("inf")
    for _ in range(5):
        begin = time.perf_counter()
        np.copyto(target, source)
        copy_s = min(copy_s, time.perf_counter() - begin)
    return Peak(kind, 2 * n**3 / best / 1e9, 2 * BANDWIDTH_BYTES / copy_s / 1e9)


def conv_work(model: onnx.ModelProto, batch: int, precision: str) -> dict[str, tuple[float, float]]:
    """Per Conv/Gemm module: (GOP per run, bytes read and written per run) at ``batch``."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.dim_value > 0 else batch for d in dims]
    initializers = {t.name: list(t.dims) for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    element = 1 if any(n.op_type == "QuantizeLinear" for n in model.graph.node) else 4
    element = (
        2
        if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
        else element
    )
    work = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        weight = _weight_initializer(node.input[1], producer, initializers)
        out = shapes.get(node.output[0])
        inp = shapes.get(node.input[0])
        if weight is None or not out or not inp:
            continue
        module = _PARAMETER.match(weight)
        if module is None:
            continue
        dims = initializers[weight]
        per_output = int(np.prod(dims[1:])) if node.op_type == "Conv" else dims[-1]
        outputs = int(np.prod(out))
        gop = 2 * outputs * per_output / 1e9
        moved = element * (int(np.prod(inp)) + int(np.prod(dims)) + outputs)
        work[module[1]] = (gop, moved)
    return work


def _weight_initializer(
    value: str, producer: dict[str, onnx.NodeProto], initializers: dict[str, list[int]]
) -> str | None:
    """The initializer a weight input comes from, directly or through a DequantizeLinear."""
    if value in initializers:
        return value
    node = producer.get(value)
    if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in initializers:
        return node.input[0]
    return None


def layer_names(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> PyTorch module (``layer1.0.conv2``, ``layer1.0 add``, ``maxpool``) for every
    node that can be placed; the rest keep their node names."""
    initializers = {t.name: list(t.dims) for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    names: dict[str, str] = {}
    for node in model.graph.node:
        for value in node.input[1:]:
            weight = _weight_initializer(value, producer, initializers)
            found = _PARAMETER.match(weight or "")
            if found and (node.op_type != "DequantizeLinear"):
                names[node.name] = found[1]
                break
    for node in model.graph.node:
        if node.name in names:
            continue
        if node.op_type in _POOLS:
            names[node.name] = _POOLS[node.op_type]
        elif node.op_type in ("Add", "QLinearAdd", "Sum"):
            block = _block_of(node, producer, names)
            if block is not None:
                names[node.name] = f"{block} add"
    return names


def _block_of(
    node: onnx.NodeProto, producer: dict[str, onnx.NodeProto], names: dict[str, str]
) -> str | None:
    """The residual block (``layer1.0``) whose conv feeds ``node``, within two hops."""
    for value in node.input:
        for _ in range(3):
            source = producer.get(value)
            if source is None:
                break
            module = names.get(source.name, "")
            if module.count(".") >= 2:
                return ".".join(module.split(".")[:2])
            if not source.input:
                break
            value = source.input[0]
    return None


def check_graph(model: onnx.ModelProto, precision: str) -> GraphCheck:
    """Counts the optimized graph's ops; for int8, lists every Conv, Add and float op that
    breaks the quantized chain."""
    ops: dict[str, int] = defaultdict(int)
    for node in model.graph.node:
        ops[node.op_type] += 1
    float_convs, float_adds, islands = [], [], []
    if precision == "int8":
        producer = {out: node for node in model.graph.node for out in node.output}
        consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in model.graph.node:
            for value in node.input:
                consumers[value].append(node)
        weights = {t.name for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type in ("Conv", "FusedConv"):
                float_convs.append(node.name)
            elif node.op_type in ("Add", "Sum"):
                float_adds.append(node.name)
            elif node.op_type not in _QUANTIZED and node.domain in ("", "ai.onnx"):
                fed = any(
                    (src := producer.get(v)) is not None
                    and src.op_type == "DequantizeLinear"
                    and src.input[0] not in weights
                    for v in node.input
                )
                feeds = any(c.op_type == "QuantizeLinear" for c in consumers[node.output[0]])
                if fed and feeds:
                    islands.append(f"{node.name} ({node.op_type})")
    fused = not (float_convs or float_adds or islands)
    return GraphCheck(dict(ops), float_convs, float_adds, islands, fused)


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
    from matplotlib.figure import Figure

    convs = [layer for layer in report.layers if layer.gops_per_s is not None]
    if not convs:
        raise InputError("nothing to plot: no Conv or Gemm layer was matched to a module")
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    axes = fig.subplots()
    intensity = np.array([layer.ops_per_byte for layer in convs])
    rate = np.array([layer.gops_per_s for layer in convs])
    share = np.array([layer.share for layer in convs])
    axes.scatter(intensity, rate, s=20 + 2000 * share, alpha=0.6, label="ONNX Runtime layers")
    for layer, x, y in zip(convs, intensity, rate, strict=True):
        if layer.share > 0.03:
            axes.annotate(
                layer.layer, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    xs = np.logspace(np.log10(intensity.min() / 2), np.log10(intensity.max() * 2), 100)
    peak, bandwidth = report.peak.gops_per_s, report.peak.bandwidth_gb_per_s
    axes.plot(xs, np.minimum(peak, bandwidth * xs), "k-", label=f"roof: {report.peak.kind}, copy")
    with_ov = [layer for layer in convs if layer.openvino_ms]
    if with_ov:
        axes.scatter(
            [layer.ops_per_byte for layer in with_ov],
            [layer.gop / (layer.openvino_ms / 1e3) for layer in with_ov],
            marker="x",
            label="OpenVINO, same layers",
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("operations per byte (input + weights + output)")
    unit = "GOP/s" if report.precision == "int8" else "GFLOP/s"
    axes.set_ylabel(unit)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    title = (
        f"{report.model.name} ({report.metadata.arch}, {report.precision}), batch "
        f"{report.batch_size}, {report.threads} threads; marker area = share of time"
    )
    if report.contention.unreliable:
        title += "\n" + report.contention.message()
    fig.suptitle(title, fontsize=9)
    with atomic_output(path, replace=replace) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
