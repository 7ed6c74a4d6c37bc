"""Optimize: fp16 and int8 models that are faster and provably still the same model.

int8 is ONNX Runtime's static QDQ quantization with per-channel signed weights, in the form the
machine that will run it needs (``--target``, see resnet_deploy.runtime.int8target): *unsigned*
activations for CPUs (only the u8-activation/s8-weight pair lets ONNX Runtime fuse every Conv
and residual Add into quantized kernels: measured on a 2-core EPYC, ResNet50 at batch 1 ran
15 ms as u8/s8 against 54 ms as s8/s8 and 47 ms in fp32), 7-bit weights for x86 CPUs without
VNNI, symmetric signed activations for TensorRT. Dynamic quantization is not offered: for a CNN
it is slower than fp32.

fp16 keeps float32 inputs and outputs (a Cast at each end), so callers change nothing.

Either result is checked against the eager fp32 model on held-out inputs before it is written
(the accuracy guard); a model that fails the guard is never written. The fp16 guard runs on
CUDA where CUDA starts: ONNX Runtime's CPU provider removes the casts and computes in fp32, so
there it checks only the rounding of the weights, and says so.
"""

from __future__ import annotations

import copy
import sys
import tempfile
from collections import Counter
from contextlib import redirect_stdout
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from resnet_deploy.check.verify import VerifyOptions, VerifyReport, format_report, verify
from resnet_deploy.convert.rewrites import Rewrites, exact_rewrites
from resnet_deploy.environment import cpu_flags
from resnet_deploy.errors import InputError, NumericsError, ProviderError, failures_of
from resnet_deploy.files import atomic_output, check_output_path
from resnet_deploy.model.metadata import ModelMetadata, write_metadata
from resnet_deploy.model.onnxfile import load_with_metadata
from resnet_deploy.runtime.int8target import DEFAULT_TARGET, SCHEMES, TARGETS, machine_note
from resnet_deploy.runtime.names import CPU
from resnet_deploy.steps import Progress, Steps, no_progress, prefixed

PRECISIONS = ("fp16", "int8")
METHODS = ("minmax", "entropy", "percentile")
# Measured on ResNet50 (random weights, 32 calibration inputs, 32 held-out ones): minmax and
# entropy gave the same model (cosine 0.984 mean / 0.982 min, top-1 0.91, SQNR 15.0 dB) in 5 s
# and 34 s; percentile a hair better cosine (0.985 / 0.983, SQNR 15.3 dB) but worse top-1 (0.84)
# in 20 s. Minmax: as accurate here, and the fastest.
DEFAULT_METHOD = "minmax"
CALIBRATION_SEED = 1_000_003  # never the seed of verify's or the guard's inputs


@dataclass(frozen=True)
class OptimizeOptions:
    precision: str = "int8"
    output: Path | None = None  # default: MODEL.int8.onnx beside the source
    calibration: str = "random"  # "random" or a folder of images
    samples: int = 32  # calibration inputs
    method: str = DEFAULT_METHOD
    per_channel: bool = True
    exclude: tuple[str, ...] = ()  # node names, or module names such as conv1 or fc
    guard: bool = True
    guard_samples: int = 16
    force: bool = False
    target: str = DEFAULT_TARGET  # int8: cpu, cpu-avx2 or tensorrt (see int8target)
    rewrite: bool = True  # int8: exact fp32 rewrites first (resnet_deploy.convert.rewrites)


@dataclass
class OptimizeResult:
    source: Path
    output: Path | None  # None when the guard refused the model
    metadata: ModelMetadata
    step_seconds: dict[str, float] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    excluded_nodes: list[str] = field(default_factory=list)
    file_bytes: int = 0
    notes: list[str] = field(default_factory=list)  # e.g. a cpu target made on a non-VNNI CPU
    guard: VerifyReport | None = None  # the accuracy guard's verification
    guard_scope: str = ""  # what the guard's provider really checked (fp16 on CPU: weights only)


def default_output(source: Path, precision: str) -> Path:
    return source.with_name(f"{source.stem}.{precision}.onnx")


def optimize_model(
    source: Path, options: OptimizeOptions, progress: Progress = no_progress
) -> OptimizeResult:
    """Convert, guard, then write; raises NumericsError (writing nothing) when the guard fails."""
    source = Path(source)
    if options.precision not in PRECISIONS:
        raise InputError(f"unknown precision {options.precision!r}; choose fp16 or int8")
    if options.method not in METHODS:
        raise InputError(f"unknown calibration method {options.method!r}")
    if options.samples < 1:
        raise InputError(
            f"calibration samples must be at least 1, got {options.samples}", options=["samples"]
        )
    if options.target not in TARGETS:
        raise InputError(f"unknown int8 target {options.target!r}; choose {', '.join(TARGETS)}")
    output = options.output or default_output(source, options.precision)
    check_output_path(output, force=options.force, inputs=[source])
    model, metadata = load_with_metadata(source)
    if metadata.precision != "fp32":
        raise InputError(f"{source}: is already {metadata.precision}; optimize an fp32 export")
    calibration = calibration_inputs(options, metadata) if options.precision == "int8" else None
    timed = Steps(progress)

    excluded = resolve_exclusions(model, options.exclude)
    if options.precision == "fp16":
        with timed("convert to fp16"), failures_of("onnxruntime's fp16 converter"):
            converted = to_fp16(model, excluded)
        details = "fp16 weights and compute, fp32 inputs and outputs"
    else:
        with timed("quantize"), failures_of("onnxruntime's quantizer"):
            converted = to_int8(model, calibration, options, excluded, progress)
        details = (
            f"static QDQ, {options.method} calibration on {len(calibration)} "
            f"{'random inputs' if options.calibration == 'random' else 'images'}, "
            f"{'per-channel' if options.per_channel else 'per-tensor'} int8 weights, "
            + SCHEMES[options.target].description
        )
    target = options.target if options.precision == "int8" else ""
    new_metadata = replace(
        metadata, precision=options.precision, calibration=details, target=target
    )
    write_metadata(converted, new_metadata)
    result = OptimizeResult(
        source=source,
        output=None,
        metadata=new_metadata,
        step_seconds=timed.seconds,
        ops=dict(Counter(n.op_type for n in converted.graph.node).most_common()),
        excluded_nodes=sorted(excluded),
    )
    if target == "cpu" and (note := machine_note(cpu_flags())):
        result.notes.append(note)
        progress(f"note: {note}")
    with atomic_output(output, replace=options.force) as tmp:
        onnx.save(converted, tmp)
        if options.guard:
            with timed("accuracy guard"):
                result.guard = run_guard(tmp, options, progress)
            result.guard.model = output  # the report names the file the user will have
            result.guard_scope = guard_scope(options.precision, result.guard.provider)
            if not result.guard.passed:
                raise GuardFailed(result)
    result.output = output
    result.file_bytes = output.stat().st_size
    return result


class GuardFailed(NumericsError):
    """The optimized model is not close enough to the fp32 model; nothing was written."""

    def __init__(self, result: OptimizeResult) -> None:
        self.result = result
        super().__init__(
            f"accuracy guard failed, nothing written: {result.guard.summary()}"
            " (the JSON record has every figure; with the guard off it is written anyway)"
        )


def run_guard(path: Path, options: OptimizeOptions, progress: Progress) -> VerifyReport:
    """Verify against the eager fp32 model on held-out inputs: verify's seeded random inputs
    (seed 0) never meet the calibration inputs (CALIBRATION_SEED, or the user's images).
    fp16 is verified on CUDA when CUDA starts, else on the CPU (weights only)."""
    checks = VerifyOptions(samples=options.guard_samples)
    guard_progress = prefixed(progress, "guard")
    if options.precision == "fp16":
        try:
            return verify(path, replace(checks, provider="cuda"), progress=guard_progress)
        except ProviderError as exc:
            progress(f"guard: CUDA cannot run here ({exc}); checking the fp16 weights on the CPU")
    return verify(path, checks, progress=guard_progress)


def guard_scope(precision: str, provider: str) -> str:
    """What a guard on ``provider`` checks of a ``precision`` model."""
    if precision == "fp16" and provider == CPU:
        return "weights only: the CPU provider computes fp16 files in fp32"
    return f"{precision} as {provider} computes it"


def calibration_inputs(options: OptimizeOptions, metadata: ModelMetadata) -> list[np.ndarray]:
    """Single-image batches: the calibrators collect statistics per input, not per batch."""
    size = metadata.image_size
    if options.calibration == "random":
        rng = np.random.default_rng(CALIBRATION_SEED)
        return [
            rng.standard_normal((1, 3, size, size), dtype=np.float32)
            for _ in range(options.samples)
        ]
    from resnet_deploy.data.images import list_images, load_image

    folder = Path(options.calibration)
    if not folder.is_dir():
        raise InputError(
            f"{folder}: calibration must be 'random' or a folder of images",
            options=["calibration"],
        )
    paths = list_images(folder)[: options.samples]
    if not paths:
        raise InputError(f"{folder}: holds no images", options=["calibration"])
    return [load_image(p, size, metadata.mean, metadata.std)[np.newaxis] for p in paths]


def resolve_exclusions(model: onnx.ModelProto, names: tuple[str, ...]) -> set[str]:
    """Node names for ``names``, each a node name or a module name (``conv1``, ``layer4.2.conv3``).

    Modules are found through their weights: the exporter names a Conv's or Gemm's weight
    initializer after the PyTorch parameter (``layer4.2.conv3.weight``).
    """
    by_module = {}
    for node in model.graph.node:
        for value in node.input[1:2]:
            if value.endswith(".weight"):
                by_module[value.removesuffix(".weight")] = node.name
    node_names = {node.name for node in model.graph.node}
    excluded = set()
    for name in names:
        if name in node_names:
            excluded.add(name)
        elif name in by_module:
            excluded.add(by_module[name])
        else:
            raise InputError(
                f"{name}: no node or module of that name in the model to keep in float",
                options=["exclude"],
            )
    return excluded


def to_fp16(model: onnx.ModelProto, excluded: set[str]) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True, node_block_list=sorted(excluded))


def to_int8(
    model: onnx.ModelProto,
    calibration: list[np.ndarray],
    options: OptimizeOptions,
    excluded: set[str],
    progress: Progress,
) -> onnx.ModelProto:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    input_name = model.graph.input[0].name

    progress("calibrating", 0, len(calibration))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.position = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.position == len(calibration):
                return None
            self.position += 1
            progress("calibrating", self.position, len(calibration))
            return {input_name: calibration[self.position - 1]}

    scheme = SCHEMES[options.target]
    model = copy.deepcopy(model)
    for_mlas = options.target != "tensorrt"
    rewrites = exact_rewrites(model, for_mlas=for_mlas) if options.rewrite else Rewrites()
    for rewrite in rewrites.done:
        progress(f"rewrite: {rewrite}")
    # The calibrators print their progress to stdout, where a --json record goes.
    with tempfile.TemporaryDirectory() as work, redirect_stdout(sys.stderr):
        prepared, quantized = Path(work) / "prepared.onnx", Path(work) / "quantized.onnx"
        quant_pre_process(model, str(prepared))
        quantize_static(
            str(prepared),
            str(quantized),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=options.per_channel,
            reduce_range=scheme.reduce_range,
            activation_type=QuantType.QUInt8 if scheme.activations == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=sorted(excluded | rewrites.float_nodes),
            calibrate_method=methods[options.method],
            extra_options=dict(scheme.extra_options),
        )
        return onnx.load(str(quantized))


def format_result(result: OptimizeResult) -> str:
    """The summary for people: what was written, how it was made, and the guard's verdict."""
    meta = result.metadata
    written = f"wrote {result.output} ({result.file_bytes / 1e6:.1f} MB)"
    lines = [
        f"{written if result.output else 'nothing written'}, {meta.precision}"
        + (f" for the {meta.target} target" if meta.target else "")
        + f": {meta.calibration}",
        "steps: " + ", ".join(f"{name} {sec:.1f} s" for name, sec in result.step_seconds.items()),
        "ops: " + ", ".join(f"{op} {n}" for op, n in result.ops.items()),
    ]
    if result.excluded_nodes:
        lines.append("kept in float: " + ", ".join(result.excluded_nodes))
    lines += [f"note: {note}" for note in result.notes]
    if result.guard is None:
        lines.append("accuracy guard: off; run `resnet-deploy verify` on the file")
    else:
        lines += ["", f"accuracy guard ({result.guard_scope}):", format_report(result.guard)]
    return "\n".join(lines)
