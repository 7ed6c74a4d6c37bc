"""Export: PyTorch ResNet -> one simplified, checked, self-describing ONNX file."""

from __future__ import annotations

import io
import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from resnet_deploy import __version__
from resnet_deploy.errors import InputError, ToolFailure, failures_of
from resnet_deploy.files import atomic_output, check_input_file, check_output_path
from resnet_deploy.model.metadata import (
    ARCHS,
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    SEED_IMAGE_SIZE,
    VARIANTS,
    ModelMetadata,
    write_metadata,
)
from resnet_deploy.model.resnet import BuiltModel, build_model
from resnet_deploy.model.weights import RANDOM
from resnet_deploy.report.records import format_table
from resnet_deploy.runtime.memory import activation_bytes, check_fits
from resnet_deploy.steps import Progress, Steps, no_progress

EXPORTERS = ("dynamo", "torchscript")
TRACE_BATCH = 2  # the example the exporter traces: batch 1 would be specialised
DEFAULT_OPSET = 18  # read by ONNX Runtime >= 1.14, TensorRT >= 8.6 and Triton alike
MIN_DYNAMO_OPSET = 18  # the dynamo exporter cannot emit older opsets
MIN_TORCHSCRIPT_OPSET, MAX_TORCHSCRIPT_OPSET = 7, 20  # where torch's own table is missing
SIMPLIFIED_OPS = {"Conv", "Relu", "Add", "MaxPool", "AveragePool", "ReduceMean"}
SIMPLIFIED_OPS |= {"GlobalAveragePool", "Flatten", "Reshape", "Gemm"}


@dataclass(frozen=True)
class ExportOptions:
    output: Path = Path("resnet50.onnx")
    arch: str = "resnet50"
    variant: str = "torchvision"
    weights: str = RANDOM
    seed: int = 0
    opset: int = DEFAULT_OPSET
    batch: int | None = None  # None: a dynamic batch axis
    image_size: int = 224  # the example's size; the only size unless dynamic_size
    dynamic_size: bool = False  # dynamic height and width (the torchvision variant only)
    simplify: bool = True
    exporter: str = "dynamo"
    force: bool = False


@dataclass
class ExportResult:
    output: Path
    metadata: ModelMetadata
    step_seconds: dict[str, float] = field(default_factory=dict)
    ops_exported: dict[str, int] = field(default_factory=dict)
    ops_final: dict[str, int] = field(default_factory=dict)
    parameters: int = 0
    file_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def check_options(options: ExportOptions) -> None:
    """Every cheap check, so a bad flag fails in milliseconds rather than after an export."""
    if options.arch not in ARCHS:
        raise InputError(f"unknown arch {options.arch!r}; choose from {', '.join(ARCHS)}")
    if options.variant not in VARIANTS:
        raise InputError(f"unknown variant {options.variant!r}; choose from {', '.join(VARIANTS)}")
    if options.exporter not in EXPORTERS:
        raise InputError(f"unknown exporter {options.exporter!r}; choose from dynamo, torchscript")
    if options.batch is not None and options.batch < 1:
        raise InputError(f"batch size must be at least 1, got {options.batch}", options=["batch"])
    if options.variant == "seed" and options.image_size != SEED_IMAGE_SIZE:
        raise InputError(
            f"the seed variant ends in AvgPool2d(7) and only takes {SEED_IMAGE_SIZE}x"
            f"{SEED_IMAGE_SIZE} inputs, got image size {options.image_size}",
            options=["variant", "image_size"],
        )
    if options.variant == "seed" and options.dynamic_size:
        raise InputError(
            f"the seed variant ends in AvgPool2d(7) and only takes {SEED_IMAGE_SIZE}x"
            f"{SEED_IMAGE_SIZE} inputs: it cannot have a dynamic size",
            options=["variant", "dynamic_size"],
        )
    if not MIN_IMAGE_SIZE <= options.image_size <= MAX_IMAGE_SIZE:
        raise InputError(
            f"image size must be {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE}, got {options.image_size}"
        )
    example = options.batch or TRACE_BATCH
    check_fits(
        3 * activation_bytes(options.arch, example, options.image_size),  # trace, check, simplify
        f"export at batch {example}, {options.image_size}x{options.image_size}",
        options=["batch", "image_size"],
    )
    oldest, newest = opset_range(options.exporter)
    if not oldest <= options.opset <= newest:
        other = " (the torchscript exporter writes older opsets)" if options.opset < oldest else ""
        raise InputError(
            f"the {options.exporter} exporter installed here writes opsets {oldest} to {newest}, "
            f"got opset {options.opset}{other}",
            options=["exporter", "opset"],
        )
    if options.weights != RANDOM:
        check_input_file(options.weights, "weights file")
    check_output_path(options.output, force=options.force, inputs=[Path(options.weights)])


def opset_range(exporter: str) -> tuple[int, int]:
    """The opsets the installed exporter can write, known before a 14 s export fails on one.

    The dynamo exporter writes opset 18 and converts it with onnx's version converter, which
    knows opsets up to the installed onnx's newest; the torchscript exporter has its own range
    in torch (a private table, read defensively: the documented one is its default).
    """
    import onnx

    if exporter == "dynamo":
        return MIN_DYNAMO_OPSET, onnx.defs.onnx_opset_version()
    try:
        from torch.onnx import _constants

        oldest = int(_constants.ONNX_MIN_OPSET)
        newest = int(_constants.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except (ImportError, AttributeError, TypeError, ValueError):
        oldest, newest = MIN_TORCHSCRIPT_OPSET, MAX_TORCHSCRIPT_OPSET
    return oldest, min(newest, onnx.defs.onnx_opset_version())


def export_model(options: ExportOptions, progress: Progress = no_progress) -> ExportResult:
    """Build, export, simplify, check and write; ``progress`` hears each step's name."""
    check_options(options)
    timed = Steps(progress)

    with timed("build model"):
        built = build_model(options.arch, options.variant, options.weights, options.seed)
    with timed("torch.onnx.export"), failures_of("torch.onnx.export"):
        proto = to_onnx(built, options)
        ops_exported = count_ops(proto)
    if options.simplify:
        with timed("onnxsim"):
            proto = simplify(proto)
    with timed("check"):
        metadata = ModelMetadata(
            arch=options.arch,
            variant=options.variant,
            weights=built.weights.source,
            weights_sha256=built.weights.sha256 or "",
            seed=built.weights.seed,
            image_size=options.image_size,
            batch="dynamic" if options.batch is None else str(options.batch),
            opset=options.opset,
            exporter=options.exporter,
            toolkit_version=__version__,
        )
        write_metadata(proto, metadata)
        onnx.checker.check_model(proto, full_check=True)
    with timed("write"), atomic_output(options.output, replace=options.force) as tmp:
        onnx.save(proto, tmp)

    return ExportResult(
        output=options.output,
        metadata=metadata,
        step_seconds=timed.seconds,
        ops_exported=ops_exported,
        ops_final=count_ops(proto),
        parameters=sum(p.numel() for p in built.model.parameters()),
        file_bytes=options.output.stat().st_size,
        notes=list(built.weights.notes),
    )


def to_onnx(built: BuiltModel, options: ExportOptions) -> onnx.ModelProto:
    """Run torch.onnx.export in memory: nothing touches the disk, no side ``.data`` file."""
    batch = options.batch or TRACE_BATCH
    example = torch.randn(batch, 3, options.image_size, options.image_size)
    names = {"input_names": ["input"], "output_names": ["logits"]}
    # The exporters log and warn about things that are not the user's concern (missing
    # torchvision ops, deprecations); errors still raise.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")
        axes = dynamic_axes(options)
        if options.exporter == "dynamo":
            minimum = {"batch": 1, "height": MIN_IMAGE_SIZE, "width": MIN_IMAGE_SIZE}
            dims = {i: torch.export.Dim(name, min=minimum[name]) for i, name in axes.items()}
            program = torch.onnx.export(
                built.model,
                (example,),
                dynamo=True,
                opset_version=options.opset,
                dynamic_shapes={"x": dims} if dims else None,
                verbose=False,
                **names,
            )
            proto = program.model_proto
        else:
            buffer = io.BytesIO()
            output_axes = {0: "batch"} if 0 in axes else {}
            torch.onnx.export(
                built.model,
                (example,),
                buffer,
                dynamo=False,
                opset_version=options.opset,
                dynamic_axes={"input": axes, "logits": output_axes} if axes else None,
                **names,
            )
            proto = onnx.load_from_string(buffer.getvalue())
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset != options.opset:
        raise ToolFailure(f"asked for opset {options.opset}, the exporter wrote {opset}")
    return proto


def dynamic_axes(options: ExportOptions) -> dict[int, str]:
    """The input's dynamic axes by index: the batch unless fixed, height and width on request."""
    axes = {} if options.batch is not None else {0: "batch"}
    if options.dynamic_size:
        axes |= {2: "height", 3: "width"}
    return axes


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and BatchNorms and drop Identity and shape-computation nodes (onnxsim)."""
    import onnxsim

    with failures_of("onnxsim"):
        simplified, ok = onnxsim.simplify(proto)
    if not ok:
        raise ToolFailure("onnxsim could not validate the simplified model")
    return simplified


def count_ops(proto: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(node.op_type for node in proto.graph.node).most_common())


def format_result(result: ExportResult) -> str:
    """The summary for people: the file, the model, time per step, nodes before and after."""
    meta = result.metadata
    weights = f"random, seed {meta.seed}" if meta.seed is not None else meta.weights
    size = meta.image_size
    ops = sorted(set(result.ops_exported) | set(result.ops_final))
    rows = [[op, result.ops_exported.get(op, 0), result.ops_final.get(op, 0)] for op in ops]
    rows.append(["total", sum(result.ops_exported.values()), sum(result.ops_final.values())])
    return "\n".join(
        [
            f"wrote {result.output} ({result.file_bytes / 1e6:.1f} MB)",
            *(f"weights: {note}" for note in result.notes),
            f"{meta.arch} ({meta.variant}), weights {weights}, opset {meta.opset}, "
            f"batch {meta.batch}, input {meta.input_name} [N,3,{size},{size}], "
            f"{result.parameters:,} parameters",
            "",
            format_table(["step", "seconds"], list(result.step_seconds.items())),
            "",
            format_table(["op", "exported", "final"], rows),
        ]
    )
