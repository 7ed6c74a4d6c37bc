"""A Triton Inference Server model repository: the ONNX file, its config.pbtxt and labels.

The config itself is built and checked in ``serving.config``; this module places it, with the
model and its labels, in ``repo/<name>/<version>/``, refusing to replace what differs unless
forced, and writes the KServe InferenceService that serves the repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from resnet_deploy import __version__
from resnet_deploy.errors import InputError
from resnet_deploy.files import read_text_file, staged_folder, write_text_atomic
from resnet_deploy.model.labels import imagenet_classes
from resnet_deploy.model.onnxfile import ModelFile, load_onnx, read_model
from resnet_deploy.report.records import format_table
from resnet_deploy.runtime.int8target import file_target, require_target
from resnet_deploy.runtime.names import CPU, CUDA, TENSORRT
from resnet_deploy.serving.config import (
    CONFIG_FILE,
    KINDS,
    LABELS_FILE,
    TRT_CACHE_ROOT,
    TensorSpec,
    TritonOptions,
    build_config,
    check_name,
    labelled_outputs,
    labels_file_text,
    model_name,
    parse_config,
    render_config,
    resolve_batching,
    tensor_specs,
)

MODEL_FILE = "model.onnx"
KSERVE_SUFFIX = "-inferenceservice.yaml"


@dataclass
class TritonResult:
    model_dir: Path
    model_file: Path
    config_file: Path
    labels_file: Path | None  # None when no output has one logit per ImageNet class
    name: str
    version: int
    versions_on_disk: list[int]
    max_batch_size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    config_text: str
    model_bytes: int
    notes: list[str] = field(default_factory=list)
    manifest_file: Path | None = None  # the KServe InferenceService beside the repository


def check_options(options: TritonOptions) -> None:
    """Every check that needs no model, so a bad flag fails before a 100 MB file is read."""
    if options.name is not None:
        check_name(options.name)
    if options.version < 1:
        raise InputError(
            f"the model version must be at least 1, got {options.version}", options=["version"]
        )
    if options.max_batch_size is not None and options.max_batch_size < 0:
        raise InputError(f"max batch size must be 0 or more, got {options.max_batch_size}")
    if any(size < 1 for size in options.preferred_batch_sizes or ()):
        raise InputError(
            f"preferred batch sizes must be at least 1: {options.preferred_batch_sizes}"
        )
    if options.max_queue_delay_us < 0:
        raise InputError(
            f"max queue delay must be 0 or more microseconds, got {options.max_queue_delay_us}"
        )
    if options.instances < 1:
        raise InputError(f"instances must be at least 1, got {options.instances}")
    if options.kind not in KINDS:
        raise InputError(f"unknown instance kind {options.kind!r}; choose gpu or cpu")
    if options.fp16 and not options.tensorrt:
        raise InputError(
            "fp16 applies to TensorRT's engine: it needs TensorRT", options=["fp16", "tensorrt"]
        )
    if options.tensorrt and options.kind != "gpu":
        raise InputError("TensorRT needs GPU instances, not CPU ones")
    repo = Path(options.repo)
    if repo.exists() and not repo.is_dir():
        raise InputError(f"{repo}: is a file, expected the model repository folder")
    if not repo.exists() and not repo.parent.is_dir():
        raise InputError(f"{repo}: its parent folder {repo.parent} does not exist")


def write_model_repository(model_file: ModelFile | Path, options: TritonOptions) -> TritonResult:
    """Write ``repo/<name>/<version>/model.onnx``, ``config.pbtxt`` and ``labels.txt``.

    Everything is checked before the first byte is written: an existing version is refused
    without ``force``, and versions already beside it must have the same inputs and outputs,
    since one config serves them all. A path is read here, once; a ModelFile is not read again.
    """
    check_options(options)
    if not isinstance(model_file, ModelFile):
        model_file = read_model(Path(model_file))
    model_path, model, metadata = model_file.path, model_file.proto, model_file.metadata
    name = model_name(model_path, metadata, options.name)
    provider = TENSORRT if options.tensorrt else {"gpu": CUDA, "cpu": CPU}[options.kind]
    target_notes = require_target(model, metadata, provider, local=False, name=str(model_path))
    inputs, outputs = tensor_specs(model)
    max_batch, preferred = resolve_batching(options, inputs, outputs)
    classes = imagenet_classes()
    labelled = labelled_outputs(outputs)
    config = build_config(name, inputs, outputs, options, max_batch, preferred, labelled)
    if options.tensorrt and file_target(model, metadata) == "tensorrt":
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
        accelerator.parameters["precision_mode"] = "INT8"  # Q/DQ needs int8 on in the builder
    text = render_config(config, model_path.name)
    labels_text = labels_file_text()

    model_dir = Path(options.repo) / name
    version_dir = model_dir / str(options.version)
    notes = target_notes + _check_other_versions(model_dir, options.version, inputs, outputs)
    notes += _check_existing(model_dir, options, config, labels_text if labelled else None)
    repo_path = Path(options.repo).resolve()
    manifest_file = repo_path.parent / f"{repo_path.name}-{name}{KSERVE_SUFFIX}"
    manifest = kserve_manifest(name, repo_path, gpu=options.kind == "gpu")
    keep_manifest = manifest_file.exists() and not options.force  # its storageUri may be set
    if keep_manifest and read_text_file(manifest_file) != manifest:
        notes.append(f"{manifest_file} differs from a new one; kept (--force rewrites it)")
    if not labelled:
        notes.append(f"no output has {len(classes)} classes: no labels.txt attached")
    if max_batch == 0:
        notes.append("max_batch_size 0: the model's batch is fixed, Triton will not batch requests")
    if options.tensorrt:
        notes.append(
            f"TensorRT engines are cached on the server in {TRT_CACHE_ROOT}/{name}; empty it "
            "when a version's weights change (TensorRT's cache id ignores the weights)"
        )

    data = model.SerializeToString()
    Path(options.repo).mkdir(exist_ok=True)
    files = {f"{options.version}/{MODEL_FILE}": data, CONFIG_FILE: text.encode()}
    if labelled:
        files[LABELS_FILE] = labels_text.encode()
    if not model_dir.exists():
        with staged_folder(model_dir, replace=options.force) as staging:
            _write_files(staging, files)
    else:
        with staged_folder(version_dir, replace=options.force) as staging:
            _write_files(staging, {MODEL_FILE: data})
        _write_beside(model_dir / CONFIG_FILE, text, force=options.force)
        if labelled:
            _write_beside(model_dir / LABELS_FILE, labels_text, force=options.force)
    if not keep_manifest:
        _write_beside(manifest_file, manifest, force=options.force)
    return TritonResult(
        model_dir=model_dir,
        model_file=version_dir / MODEL_FILE,
        config_file=model_dir / CONFIG_FILE,
        labels_file=model_dir / LABELS_FILE if labelled else None,
        name=name,
        version=options.version,
        versions_on_disk=_versions(model_dir),
        max_batch_size=max_batch,
        inputs=inputs,
        outputs=outputs,
        config_text=text,
        model_bytes=len(data),
        notes=notes,
        manifest_file=manifest_file,
    )


def kserve_manifest(name: str, repo: Path, *, gpu: bool) -> str:
    """A KServe InferenceService serving ``repo`` with KServe's Triton runtime, protocol v2.

    Written by hand (it is a dozen lines) to keep a YAML library out of the dependencies;
    every value is quoted, so a name such as ``1e5`` stays a string.
    """
    resource = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    resource = resource if resource[:1].isalpha() else f"m-{resource}"
    lines = [
        f'# KServe InferenceService for model "{name}" of the Triton model repository',
        f"# {repo.name}/, written by resnet-deploy {__version__}. Upload the folder (object",
        "# storage or a PVC), set storageUri to it, then `kubectl apply -f` this file.",
        "# KServe's Triton runtime serves every model in it over the v2 protocol, at",
        "# /v2/models/<name>/infer: the same requests `resnet-deploy serve` answers.",
        "apiVersion: serving.kserve.io/v1beta1",
        "kind: InferenceService",
        "metadata:",
        f'  name: "{resource[:63].rstrip("-")}"',
        "spec:",
        "  predictor:",
        "    model:",
        "      modelFormat:",
        '        name: "triton"',
        '      protocolVersion: "v2"',
        '      runtime: "kserve-tritonserver"',
        f'      storageUri: "s3://CHANGE-ME/{repo.name}"',
    ]
    if gpu:
        lines += ["      resources:", "        limits:", '          nvidia.com/gpu: "1"']
    return "\n".join(lines) + "\n"


def _versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def _check_existing(
    model_dir: Path, options: TritonOptions, config: mc.ModelConfig, labels: str | None
) -> list[str]:
    """Refuse, unless forced, to replace a version or a config/labels file that differs."""
    if model_dir.exists() and not model_dir.is_dir():
        raise InputError(f"{model_dir}: is a file, expected the model's folder")
    version_dir = model_dir / str(options.version)
    if version_dir.exists() and not options.force:
        raise InputError(
            f"{version_dir}: version {options.version} already exists (force replaces it; "
            "another version number adds one beside it)"
        )
    notes = []
    config_file = model_dir / CONFIG_FILE
    if config_file.exists():
        try:
            changed = _changed_fields(
                parse_config(read_text_file(config_file), str(config_file)), config
            )
        except InputError:
            if not options.force:
                raise
            changed = ["(unreadable before)"]
        if changed and not options.force:
            raise InputError(
                f"{config_file}: the versions already there are served with other settings "
                f"({', '.join(changed)}); force rewrites it"
            )
        if changed:
            notes.append(f"{CONFIG_FILE} rewritten: {', '.join(changed)} changed")
    labels_file = model_dir / LABELS_FILE
    if (
        labels
        and labels_file.exists()
        and read_text_file(labels_file) != labels
        and not options.force
    ):
        raise InputError(f"{labels_file}: holds other labels; force rewrites it")
    return notes


def _changed_fields(old: mc.ModelConfig, new: mc.ModelConfig) -> list[str]:
    names = {f.name for f, _ in old.ListFields()} | {f.name for f, _ in new.ListFields()}
    return sorted(n for n in names if getattr(old, n) != getattr(new, n))


def _check_other_versions(
    model_dir: Path, version: int, inputs: list[TensorSpec], outputs: list[TensorSpec]
) -> list[str]:
    notes = []
    for other in _versions(model_dir):
        if other == version:
            continue
        path = model_dir / str(other) / MODEL_FILE
        if not path.is_file():
            notes.append(f"version {other} has no {MODEL_FILE}; Triton will fail to load it")
            continue
        if tensor_specs(load_onnx(path)) != (inputs, outputs):
            raise InputError(
                f"{path}: version {other} has other inputs or outputs than this model, and one "
                "config serves every version; use another model name"
            )
    return notes


def _write_beside(path: Path, text: str, *, force: bool) -> None:
    """Write a file shared by every version: replaced only when forced (a difference without
    force was refused before any work), written only onto nothing otherwise, and left alone
    when another command has just written the same text."""
    if not force and path.exists() and read_text_file(path) == text:
        return
    write_text_atomic(path, text, replace=force)


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def format_result(result: TritonResult) -> str:
    """The summary for people: the files written and how each tensor is configured."""
    lines = []
    versions = ", ".join(map(str, result.versions_on_disk))
    lines.append(f"wrote {result.model_dir}: version {result.version} (on disk: {versions})")
    lines.append(f"  {result.model_file} ({result.model_bytes / 1e6:.1f} MB)")
    lines.append(f"  {result.config_file}")
    if result.labels_file:
        lines.append(f"  {result.labels_file} (ImageNet's 1000 class names)")
    lines.append("")
    skip = 1 if result.max_batch_size > 0 else 0
    rows = [
        [t.name, role, t.data_type, list(t.shape), list(t.shape[skip:])]
        for role, tensors in (("input", result.inputs), ("output", result.outputs))
        for t in tensors
    ]
    lines.append(format_table(["tensor", "role", "type", "model shape", "config dims"], rows))
    lines.append("")
    lines.append(f"max_batch_size {result.max_batch_size}; see {result.config_file} for the rest")
    if result.manifest_file:
        lines.append(
            f"KServe: {result.manifest_file} (set its storageUri to the uploaded repository)"
        )
    for note in result.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
