"""Verify: does the ONNX file compute what the eager PyTorch model computes?

The reference is the eager model itself, rebuilt from the file's metadata (the weights file
re-hashed), run on the CPU in float32 under ``torch.inference_mode`` on copies of the inputs.
Every comparison also reports the fp32 noise floor (the eager model in float64 against itself
in float32), so an error can be read against the noise any fp32 implementation makes.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from resnet_deploy.check.localize import Localization, localize
from resnet_deploy.check.sweep import (
    InputSource,
    ShapeResult,
    graph_input,
    judge_shape,
    plan_shapes,
)
from resnet_deploy.errors import InputError
from resnet_deploy.model.eager import torch_tf32
from resnet_deploy.model.metadata import (
    ARCHS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MIN_IMAGE_SIZE,
    VARIANTS,
    ModelMetadata,
)
from resnet_deploy.model.onnxfile import ModelFile, read_model
from resnet_deploy.model.resnet import BuiltModel, build_model, rebuild_model
from resnet_deploy.model.weights import RANDOM
from resnet_deploy.report.records import format_table
from resnet_deploy.runtime.int8target import require_target
from resnet_deploy.runtime.memory import activation_bytes, check_fits, input_bytes
from resnet_deploy.runtime.names import CUDA, TENSORRT
from resnet_deploy.runtime.placement import Placement, check_placement
from resnet_deploy.runtime.providers import (
    SessionConfig,
    create_session,
    cuda_provider_options,
    provider_options_used,
    resolve_provider,
    tensorrt_build_note,
    trt_profile,
    with_trt_profile,
)
from resnet_deploy.steps import Progress, no_progress
from resnet_deploy.tolerance import Tolerance


@dataclass(frozen=True)
class VerifyOptions:
    weights: str | None = None  # the checkpoint, if it moved since export (re-hashed)
    arch: str | None = None  # only for files without resnet-deploy metadata
    variant: str | None = None  # likewise
    provider: str = "cpu"
    batch_sizes: tuple[int, ...] | None = None  # None: 1, 2, 7 from a dynamic-batch file
    image_size: int | None = None  # None: the file's own (and 160 when the file allows it)
    inputs: str = RANDOM  # "random" (seeded normal), a folder of images, or an NCHW .npy file
    samples: int | None = None  # per shape; None: 8 random ones, or every image given
    seed: int = 0  # of the random inputs
    atol: float | None = None
    rtol: float | None = None
    min_cosine: float | None = None
    allow_tf32: bool = False
    localize: bool = False
    strict_placement: bool = False  # GPU: compute nodes on the CPU are an error


@dataclass
class VerifyReport:
    model: Path
    arch: str
    variant: str
    weights: str
    precision: str
    reference: str  # where the eager model's description came from: "metadata" or "flags"
    inputs: str
    provider: str
    provider_options: dict[str, dict[str, str]]
    onnxruntime_tf32: str
    torch_tf32: dict[str, str | bool]  # during the reference run (on the CPU: TF32 never applies)
    tolerance: Tolerance
    shape_note: str
    tf32: bool = False  # ONNX Runtime may compute fp32 convolutions in TF32: tf32 tolerance
    placement: Placement | None = None
    shapes: list[ShapeResult] = field(default_factory=list)
    localization: Localization | None = None
    seconds: float = 0.0
    passed: bool = False
    warnings: list[str] = field(default_factory=list)  # e.g. an int8 file made for other CPUs

    def summary(self) -> str:
        """One line: the verdict, and for a failure the first failing shape and why."""
        failing = [s for s in self.shapes if not s.passed]
        if not failing:
            return f"passed at {len(self.shapes)} shapes ({self.shape_note})"
        first = failing[0]
        where = f"batch {first.batch_size} at {first.image_size}x{first.image_size}"
        line = f"failed at {len(failing)} of {len(self.shapes)} shapes; {where}: "
        line += "; ".join(first.failures)
        diverged = self.localization and self.localization.first_divergence
        if diverged:
            line += f"; first divergence at {diverged.name} ({diverged.kind})"
        return line


@dataclass(frozen=True)
class Reference:
    """The eager model and what the ONNX file expects of its inputs."""

    built: BuiltModel
    source: str
    input_name: str
    output_name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    precision: str


def verify(
    model: ModelFile | Path,
    options: VerifyOptions,
    progress: Progress = no_progress,
) -> VerifyReport:
    """Run the ONNX file and the eager model on the same inputs at every shape of the sweep.

    A path is read here, once; a ModelFile the caller already read is not read again.
    """
    started = time.perf_counter()
    check_options(options)
    if not isinstance(model, ModelFile):
        model = read_model(Path(model))
    model_path, proto, metadata = model.path, model.proto, model.metadata
    provider = resolve_provider(options.provider)
    target_warnings = require_target(proto, metadata, provider, name=str(model_path))
    for warning in target_warnings:
        progress(f"warning: {warning}")
    variant = metadata.variant if metadata else options.variant or "torchvision"
    shapes, shape_note = plan_shapes(proto, options, variant)
    mean, std = (metadata.mean, metadata.std) if metadata else (IMAGENET_MEAN, IMAGENET_STD)
    source = InputSource(options, shapes, mean, std)  # reads --inputs: cheap checks come first
    check_verify_memory(metadata.arch if metadata else options.arch, shapes, source, options)
    config = session_config(options, shapes=shapes, input_name=graph_input(proto).name)
    progress(f"start ONNX Runtime on {resolve_provider(options.provider)}")
    note = tensorrt_build_note(config)
    if note:
        progress(note)
    session = create_session(model, config)  # a provider that cannot run fails fast
    progress("rebuild the eager model")
    reference = build_reference(proto, metadata, model_path, options)
    provider = session.get_providers()[0]
    tf32 = tf32_in_use(provider, options)
    judged_as = "tf32" if tf32 and reference.precision == "fp32" else reference.precision
    tolerance = Tolerance.for_precision(
        judged_as, atol=options.atol, rtol=options.rtol, min_cosine=options.min_cosine
    )
    if options.localize and tolerance.layer_rel_error is None:
        raise InputError(
            f"localizing compares fp32 and fp16 files layer by layer; {model_path} is "
            f"{reference.precision}, whose values do not line up with the eager modules",
            options=["localize"],
        )
    used = provider_options_used(session)
    report = VerifyReport(
        model=model_path,
        arch=reference.built.arch,
        variant=reference.built.variant,
        weights=reference.built.weights.description,
        precision=reference.precision,
        reference=reference.source,
        inputs=source.description,
        provider=provider,
        provider_options=used,
        onnxruntime_tf32=onnxruntime_tf32(provider, used),
        torch_tf32={},
        tolerance=tolerance,
        shape_note=shape_note,
        tf32=tf32,
        placement=session.placement,
        warnings=target_warnings + check_placement(session.placement, strict=False),
    )
    eager32 = reference.built.model
    eager64 = copy.deepcopy(eager32).double()
    with torch_tf32(options.allow_tf32) as tf32:
        report.torch_tf32 = tf32
        progress("shapes", 0, len(shapes))
        for done, (batch_size, image_size) in enumerate(shapes, 1):
            batches = source.batches(batch_size, image_size)
            progress(f"batch {batch_size} at {image_size}x{image_size}: {len(batches)} run(s)")
            actual, expected, precise = [], [], []
            for batch in batches:
                actual.append(
                    session.run([reference.output_name], {reference.input_name: batch})[0]
                )
                expected.append(run_eager(eager32, batch))
                precise.append(run_eager(eager64, batch.astype(np.float64)))
            report.shapes.append(judge_shape(batches, actual, expected, precise, tolerance))
            progress("shapes", done, len(shapes))
        report.passed = all(shape.passed for shape in report.shapes)
        if options.localize:
            failing = [i for i, s in enumerate(report.shapes) if not s.passed]
            batch_size, image_size = shapes[failing[0] if failing else 0]
            progress(f"localize at batch {batch_size}, {image_size}x{image_size}")
            report.localization = localize(
                proto,
                eager32,
                source.batches(batch_size, image_size)[0],
                config,
                input_name=reference.input_name,
                min_rel_error=tolerance.layer_rel_error,
            )
    report.seconds = time.perf_counter() - started
    return report


def check_verify_memory(
    arch: str | None, shapes: list[tuple[int, int]], source: InputSource, options: VerifyOptions
) -> None:
    """Eager fp32 and fp64 and ONNX Runtime at the largest shape, plus the decoded inputs;
    --localize keeps every layer's output of both sides."""
    if arch is None:
        return  # build_reference says what is missing
    batch, size = max(shapes, key=lambda shape: shape[0] * shape[1] ** 2)
    needed = source.samples * input_bytes(1, size) + 4 * activation_bytes(arch, batch, size)
    if options.localize:
        needed += 2 * activation_bytes(arch, batch, size, every_layer=True)
    check_fits(needed, f"verify at batch {batch}, {size}x{size}")


def check_options(options: VerifyOptions) -> None:
    """The cheap checks, so a bad flag fails before a model is built."""
    if options.batch_sizes is not None and (
        not options.batch_sizes or min(options.batch_sizes) < 1
    ):
        raise InputError(f"batch sizes must be at least 1, got {options.batch_sizes}")
    if options.seed < 0:
        raise InputError(f"seed must be 0 or more, got {options.seed}")
    if options.samples is not None and options.samples < 1:
        raise InputError(f"samples must be at least 1, got {options.samples}")
    if options.image_size is not None and options.image_size < MIN_IMAGE_SIZE:
        raise InputError(f"image size must be at least {MIN_IMAGE_SIZE}, got {options.image_size}")
    if options.arch is not None and options.arch not in ARCHS:
        raise InputError(f"unknown arch {options.arch!r}; choose from {', '.join(ARCHS)}")
    if options.variant is not None and options.variant not in VARIANTS:
        raise InputError(f"unknown variant {options.variant!r}; choose from {', '.join(VARIANTS)}")
    resolve_provider(options.provider)
    if options.inputs != RANDOM and not Path(options.inputs).exists():
        raise InputError(f"{options.inputs}: inputs not found (use 'random', a folder or a .npy)")


def build_reference(
    proto: onnx.ModelProto, metadata: ModelMetadata | None, path: Path, options: VerifyOptions
) -> Reference:
    """The eager model the file claims to be; flags may only fill what metadata lacks."""
    if metadata is not None:
        for flag, given, recorded in (
            ("arch", options.arch, metadata.arch),
            ("variant", options.variant, metadata.variant),
        ):
            if given is not None and given != recorded:
                raise InputError(
                    f"--{flag} {given} contradicts {path}, whose metadata records {flag} "
                    f"{recorded}; drop the flag (the metadata says what the file is)"
                )
        return Reference(
            built=rebuild_model(metadata, options.weights),
            source="metadata",
            input_name=metadata.input_name,
            output_name=metadata.output_name,
            mean=tuple(metadata.mean),
            std=tuple(metadata.std),
            precision=metadata.precision,
        )
    if options.arch is None:
        raise InputError(
            f"{path} has no resnet-deploy metadata: name the architecture (and the variant "
            "and weights) of the eager model it was exported from",
            options=["arch", "variant", "weights"],
        )
    return Reference(
        built=build_model(
            options.arch, options.variant or "torchvision", options.weights or RANDOM
        ),
        source="flags",
        input_name=graph_input(proto).name,
        output_name=proto.graph.output[0].name,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        precision="fp32",
    )


def run_eager(model: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    """The eager model on a copy of ``batch`` (a model may write into its input)."""
    with torch.inference_mode():
        return model(torch.from_numpy(batch.copy())).numpy()


def session_config(
    options: VerifyOptions,
    *,
    shapes: list[tuple[int, int]] | None = None,
    input_name: str = "input",
) -> SessionConfig:
    """CUDA computes fp32 convolutions in TF32 by default; verify turns that off unless asked.

    TensorRT gets one explicit profile covering every planned (batch, image size), so it
    builds one engine instead of one per new shape.
    """
    provider = resolve_provider(options.provider)
    provider_options: dict[str, str] = {}
    if provider == CUDA:
        provider_options = cuda_provider_options(tf32=options.allow_tf32)
    config = SessionConfig(
        provider=options.provider,
        provider_options=provider_options,
        strict_placement=options.strict_placement,
    )
    if provider != TENSORRT or not shapes:
        return config
    batches, sizes = zip(*shapes, strict=True)
    return with_trt_profile(config, trt_profile(input_name, batches, sizes), model_sha256="")


def tf32_in_use(provider: str, options: VerifyOptions) -> bool:
    """Whether ONNX Runtime may compute fp32 convolutions in TF32 (10-bit mantissa inputs).

    CUDA: only with --allow-tf32. TensorRT: always, as it has no option to turn TF32 off,
    unless NVIDIA_TF32_OVERRIDE=0 was in the environment (it must be set before CUDA starts,
    so verify reads it and never sets it). Either way verify applies the tf32 tolerance then.
    """
    if provider == CUDA:
        return options.allow_tf32
    if provider == TENSORRT:
        return os.environ.get("NVIDIA_TF32_OVERRIDE") != "0"
    return False


def onnxruntime_tf32(provider: str, used: dict[str, dict[str, str]]) -> str:
    if provider == CUDA:
        return f"use_tf32={used.get(provider, {}).get('use_tf32', '?')}"
    if provider == TENSORRT:
        if os.environ.get("NVIDIA_TF32_OVERRIDE") == "0":
            return "off (NVIDIA_TF32_OVERRIDE=0)"
        return "on (TensorRT's default; NVIDIA_TF32_OVERRIDE=0 before starting turns it off)"
    return f"not applicable on {provider}"


def format_report(report: VerifyReport) -> str:
    """The report for people: what was compared, one table row per shape, the verdict."""
    tol = report.tolerance
    rule = f"cosine >= {tol.min_cosine:g}"
    if tol.elementwise:
        rule = f"|onnx - eager| <= {tol.atol:g} + {tol.rtol:g} * |eager| per element, " + rule
    if tol.min_top1_agreement or tol.min_top5_agreement:
        rule += f", top-1 >= {tol.min_top1_agreement:g}, top-5 >= {tol.min_top5_agreement:g}"
    torch_tf32 = "on" if any(v in (True, "tf32") for v in report.torch_tf32.values()) else "off"
    lines = [
        f"{report.model}: {report.arch} ({report.variant}), weights {report.weights}, "
        f"{report.precision}; eager reference from {report.reference}",
        f"ONNX Runtime {report.provider}; TF32: onnxruntime {report.onnxruntime_tf32}, "
        f"torch {torch_tf32} (reference on the CPU)",
        f"inputs: {report.inputs}; {report.shape_note}",
        f"tolerance ({tol.precision}): {rule}",
    ]
    if report.placement is not None:
        lines.append(report.placement.summary())
    lines += [f"warning: {text}" for text in report.warnings]
    lines.append("")
    headers = ["batch", "size", "samples", "max abs", "max rel", "mean abs", "min cosine"]
    headers += ["min SQNR dB", "top-1", "top-5", "noise floor", "result"]
    rows = [
        [
            s.batch_size,
            s.image_size,
            s.errors.samples,
            s.errors.max_abs_error,
            s.errors.max_rel_error,
            s.errors.mean_abs_error,
            f"{s.errors.min_cosine_similarity:.7f}",
            s.errors.min_sqnr_db,
            s.errors.top1_agreement,
            s.errors.top5_agreement,
            s.noise_floor_max_abs,
            "pass" if s.passed else "FAIL",
        ]
        for s in report.shapes
    ]
    lines.append(format_table(headers, rows))
    for s in report.shapes:
        for failure in s.failures:
            lines.append(f"batch {s.batch_size} at {s.image_size}: {failure}")
    if report.localization is not None:
        lines += ["", localization_line(report.localization)]
    if report.passed:  # a failure is the caller's error message
        lines += ["", f"PASS: {report.summary()}"]
    return "\n".join(lines)


def localization_line(found: Localization) -> str:
    where = f"layer by layer at batch {found.batch_size}, {found.image_size}x{found.image_size}"
    where += f", {len(found.layers)} points matched by {found.mapping}"
    first = found.first_divergence
    if first is None:
        closest = max(found.layers, key=lambda layer: layer.rel_error / layer.limit_rel)
        return (
            f"{where}: no point beyond tolerance (closest: {closest.name}, error "
            f"{closest.rel_error:.2e} of the activation's RMS against a limit of "
            f"{closest.limit_rel:.2e})"
        )
    return (
        f"{where}: first divergence at {first.name} ({first.kind}, ONNX value "
        f"{first.onnx_value}): error {first.rel_error:.2e} of the activation's RMS, "
        f"limit {first.limit_rel:.2e} (every point in the JSON record)"
    )
