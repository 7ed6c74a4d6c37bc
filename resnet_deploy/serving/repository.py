"""A Triton Inference Server model repository: the ONNX file, its config.pbtxt and labels.

The config is built as Triton's own ``inference.ModelConfig`` protobuf (``tritonclient`` ships
it), rendered with protobuf's text format and parsed back, so a field name or value that
Triton's parser would reject fails here rather than at server start. ``check_config`` adds the
rules Triton's ``ValidateModelConfig`` applies to the fields we write.

Batching follows the model. If every input and output has a dynamic first dimension, the config
gets ``max_batch_size`` (32 by default), ``dims`` without the batch dimension and a dynamic
batcher. A model exported with a fixed batch gets ``max_batch_size: 0`` and its full shape:
Triton's ONNX Runtime backend refuses a batching config unless the model's first dimension is
dynamic, so there is nothing to batch.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from resnet_deploy import __version__
from resnet_deploy.errors import InputError
from resnet_deploy.files import write_text_atomic
from resnet_deploy.model.labels import imagenet_classes
from resnet_deploy.model.metadata import ModelMetadata, read_metadata
from resnet_deploy.model.onnxfile import load_onnx
from resnet_deploy.report.records import format_table
from resnet_deploy.runtime.int8target import file_target, require_target
from resnet_deploy.runtime.names import CPU, CUDA, TENSORRT

PLATFORM = "onnxruntime_onnx"
MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
LABELS_FILE = "labels.txt"
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_PREFERRED_BATCH_SIZES = (8, 16)  # kept where they fit under max_batch_size
KSERVE_SUFFIX = "-inferenceservice.yaml"
KINDS = {"gpu": mc.ModelInstanceGroup.KIND_GPU, "cpu": mc.ModelInstanceGroup.KIND_CPU}
TRT_WORKSPACE_BYTES = 1 << 30  # the backend's documented default, written out to be visible
# Where the server keeps TensorRT engines, per model name, so a reload or a new instance loads
# the engine instead of building it again (minutes); a path on the server's file system.
TRT_CACHE_ROOT = "/tmp/resnet-deploy-trt"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_ONNX_TO_TRITON = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FLOAT16": "TYPE_FP16",
    "FLOAT": "TYPE_FP32",
    "DOUBLE": "TYPE_FP64",
    "STRING": "TYPE_STRING",
    "BFLOAT16": "TYPE_BF16",
}


@dataclass(frozen=True)
class TritonOptions:
    repo: Path
    name: str | None = None  # None: the arch in the model's metadata, else the file's stem
    version: int = 1
    max_batch_size: int | None = None  # None: 32 for a dynamic-batch model, 0 for a fixed one
    preferred_batch_sizes: tuple[int, ...] | None = None  # None: 8 and 16 where they fit
    max_queue_delay_us: int = 100
    instances: int = 1
    kind: str = "gpu"
    tensorrt: bool = False
    fp16: bool = False
    warmup: bool = True
    force: bool = False


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the ONNX graph declares it; -1 marks a dynamic dimension."""

    name: str
    data_type: str  # Triton's name, e.g. TYPE_FP32
    shape: tuple[int, ...]


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
        raise InputError(f"--version must be at least 1, got {options.version}")
    if options.max_batch_size is not None and options.max_batch_size < 0:
        raise InputError(f"--max-batch-size must be 0 or more, got {options.max_batch_size}")
    if any(size < 1 for size in options.preferred_batch_sizes or ()):
        raise InputError(
            f"preferred batch sizes must be at least 1: {options.preferred_batch_sizes}"
        )
    if options.max_queue_delay_us < 0:
        raise InputError(
            f"--max-queue-delay-us must be 0 or more, got {options.max_queue_delay_us}"
        )
    if options.instances < 1:
        raise InputError(f"--instances must be at least 1, got {options.instances}")
    if options.kind not in KINDS:
        raise InputError(f"unknown instance kind {options.kind!r}; choose gpu or cpu")
    if options.fp16 and not options.tensorrt:
        raise InputError("--fp16 applies to TensorRT's engine: pass --tensorrt with it")
    if options.tensorrt and options.kind != "gpu":
        raise InputError("--tensorrt needs GPU instances: drop --kind cpu")
    repo = Path(options.repo)
    if repo.exists() and not repo.is_dir():
        raise InputError(f"{repo}: is a file, expected the model repository folder")
    if not repo.exists() and not repo.parent.is_dir():
        raise InputError(f"{repo}: its parent folder {repo.parent} does not exist")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InputError(
            f"model name {name!r}: use letters, digits, '_', '-' and '.', not starting with '.'"
        )
    return name


def model_name(model_path: Path, metadata: ModelMetadata | None, name: str | None) -> str:
    """``name``, else the arch in the model's metadata, else the file's stem; checked."""
    return check_name(name or (metadata.arch if metadata else Path(model_path).stem))


def tensor_specs(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph's real inputs (initializers excluded) and outputs, with Triton data types."""
    weights = {init.name for init in model.graph.initializer}
    inputs = [_spec(v) for v in model.graph.input if v.name not in weights]
    return inputs, [_spec(v) for v in model.graph.output]


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor = value.type.tensor_type
    onnx_type = onnx.TensorProto.DataType.Name(tensor.elem_type)
    if onnx_type not in _ONNX_TO_TRITON:
        raise InputError(f"tensor {value.name!r} has type {onnx_type}, which Triton cannot carry")
    if not tensor.HasField("shape"):
        raise InputError(f"tensor {value.name!r} has no declared shape; Triton needs its dims")
    shape = tuple(d.dim_value if d.dim_value > 0 else -1 for d in tensor.shape.dim)
    return TensorSpec(value.name, _ONNX_TO_TRITON[onnx_type], shape)


def resolve_batching(
    options: TritonOptions, inputs: list[TensorSpec], outputs: list[TensorSpec]
) -> tuple[int, tuple[int, ...]]:
    """``(max_batch_size, preferred_batch_sizes)`` for this model and these options."""
    tensors = inputs + outputs
    batchable = all(t.shape and t.shape[0] == -1 for t in tensors)
    if not batchable:
        if options.max_batch_size or options.preferred_batch_sizes:
            shapes = ", ".join(f"{t.name} {list(t.shape)}" for t in tensors)
            raise InputError(
                f"the model's batch is fixed ({shapes}): Triton can only batch a model whose "
                "first dimension is dynamic; export it with --batch dynamic, or drop "
                "--max-batch-size/--preferred-batch-sizes"
            )
        return 0, ()
    max_batch = DEFAULT_MAX_BATCH_SIZE if options.max_batch_size is None else options.max_batch_size
    if options.preferred_batch_sizes is None:
        preferred = tuple(s for s in DEFAULT_PREFERRED_BATCH_SIZES if s <= max_batch)
    else:
        preferred = tuple(sorted(set(options.preferred_batch_sizes)))
    if preferred and max_batch == 0:
        raise InputError("preferred batch sizes need --max-batch-size above 0")
    if preferred and preferred[-1] > max_batch:
        raise InputError(
            f"preferred batch size {preferred[-1]} exceeds --max-batch-size {max_batch}"
        )
    return max_batch, preferred


def labelled_outputs(outputs: list[TensorSpec]) -> set[str]:
    """The outputs with one value a class, which get labels.txt (Triton's classification)."""
    return {o.name for o in outputs if o.shape and o.shape[-1] == len(imagenet_classes())}


def build_config(
    name: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    options: TritonOptions,
    max_batch_size: int,
    preferred: tuple[int, ...],
    labelled: set[str],
) -> mc.ModelConfig:
    """The ModelConfig message; ``labelled`` names the outputs that get labels.txt."""
    config = mc.ModelConfig(name=name, platform=PLATFORM, max_batch_size=max_batch_size)
    config.version_policy.latest.num_versions = 1  # Triton's default, written out
    skip = 1 if max_batch_size > 0 else 0  # Triton's dims leave out the batch dimension
    for spec in inputs:
        config.input.add(name=spec.name, data_type=spec.data_type, dims=spec.shape[skip:])
    for spec in outputs:
        label = LABELS_FILE if spec.name in labelled else ""
        config.output.add(
            name=spec.name, data_type=spec.data_type, dims=spec.shape[skip:], label_filename=label
        )
    if max_batch_size > 0:
        config.dynamic_batching.preferred_batch_size.extend(preferred)
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    config.instance_group.add(count=options.instances, kind=KINDS[options.kind])
    if options.tensorrt:
        trt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(
            name="tensorrt"
        )
        trt.parameters["precision_mode"] = "FP16" if options.fp16 else "FP32"
        trt.parameters["max_workspace_size_bytes"] = str(TRT_WORKSPACE_BYTES)
        trt.parameters["trt_engine_cache_enable"] = "1"
        trt.parameters["trt_engine_cache_path"] = f"{TRT_CACHE_ROOT}/{name}"
    if options.warmup:
        # Batch 1 and the largest batch: the first requests of either size then find CUDA
        # kernels (and TensorRT's engine, which is built for the shapes it has seen) ready.
        for batch in sorted({1, max(max_batch_size, 1)}):
            sample = config.model_warmup.add(name=f"random_batch_{batch}", batch_size=batch)
            for spec in inputs:
                dims = _warmup_dims(spec, skip)
                sample.inputs[spec.name].CopyFrom(
                    mc.ModelWarmup.Input(data_type=spec.data_type, dims=dims, random_data=True)
                )
    return config


def _warmup_dims(spec: TensorSpec, skip: int) -> tuple[int, ...]:
    if skip == 0 and spec.shape and spec.shape[0] == -1:  # a dynamic batch served unbatched
        shape = (1, *spec.shape[1:])
    else:
        shape = spec.shape[skip:]
    if -1 in shape:
        raise InputError(
            f"input {spec.name!r} has dynamic dimensions {list(spec.shape)}: warm-up data needs "
            "a fixed shape; pass --no-warmup"
        )
    return shape


def check_config(config: mc.ModelConfig) -> None:
    """Triton's ValidateModelConfig rules for the fields this module writes."""
    problems = []
    if not config.name or not (config.platform or config.backend):
        problems.append("'name' and 'platform' (or 'backend') are required")
    if config.max_batch_size < 0:
        problems.append("'max_batch_size' must be 0 or more")
    for io in [*config.input, *config.output]:
        if not io.name or io.data_type == mc.TYPE_INVALID or not io.dims:
            problems.append(f"tensor {io.name!r} needs a name, a data_type and dims")
        if any(d < 1 and d != -1 for d in io.dims):
            problems.append(f"tensor {io.name!r}: dims must be >= 1, or -1 for a variable size")
    for size in config.dynamic_batching.preferred_batch_size:
        if not 1 <= size <= config.max_batch_size:
            problems.append(f"preferred batch size {size} is not in 1..max_batch_size")
    if not config.instance_group:
        problems.append("an instance_group is required")
    for group in config.instance_group:
        if group.kind not in KINDS.values() or group.count < 1:
            problems.append("instance_group needs kind KIND_GPU or KIND_CPU and count >= 1")
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    for accelerator in accelerators:
        if accelerator.parameters.get("precision_mode", "FP32") not in ("FP32", "FP16", "INT8"):
            problems.append("TensorRT precision_mode must be FP32, FP16 or INT8")
    dims = {io.name: list(io.dims) for io in config.input}
    for sample in config.model_warmup:
        if sample.batch_size < 1 or (config.max_batch_size == 0 and sample.batch_size != 1):
            problems.append(f"warm-up {sample.name!r}: batch_size must be >= 1 (1 if unbatched)")
        if set(sample.inputs) != set(dims):
            problems.append(f"warm-up {sample.name!r} must give exactly the inputs {sorted(dims)}")
        for key, value in sample.inputs.items():
            expected = [1 if d == -1 else d for d in dims.get(key, [])]
            if list(value.dims) != expected:
                problems.append(f"warm-up {sample.name!r}: {key} dims must be {expected}")
    if problems:
        raise InputError(f"invalid Triton config for {config.name!r}: {'; '.join(problems)}")


def parse_config(text: str, source: str = CONFIG_FILE) -> mc.ModelConfig:
    """Parse config.pbtxt text as Triton does, then apply ``check_config``."""
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise InputError(f"{source}: not a valid Triton model config: {exc}") from None
    check_config(config)
    return config


def render_config(config: mc.ModelConfig, source: str) -> str:
    """The config as text, proven to parse back to the very same message."""
    body = text_format.MessageToString(config, use_short_repeated_primitives=True)
    text = f"# Written by resnet-deploy {__version__} from {source}.\n{body}"
    if parse_config(text) != config:
        raise RuntimeError("config.pbtxt does not parse back to the message it was made from")
    return text


def write_model_repository(model_path: Path, options: TritonOptions) -> TritonResult:
    """Write ``repo/<name>/<version>/model.onnx``, ``config.pbtxt`` and ``labels.txt``.

    Everything is checked before the first byte is written: an existing version is refused
    without ``force``, and versions already beside it must have the same inputs and outputs,
    since one config serves them all.
    """
    check_options(options)
    model_path = Path(model_path)
    model = load_onnx(model_path)
    metadata = read_metadata(model, model_path)
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
    if keep_manifest and manifest_file.read_text() != manifest:
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
        with _staged_folder(model_dir) as staging:
            _write_files(staging, files)
    else:
        with _staged_folder(version_dir) as staging:
            _write_files(staging, {MODEL_FILE: data})
        write_text_atomic(model_dir / CONFIG_FILE, text, replace=True)  # checked above
        if labelled:
            write_text_atomic(model_dir / LABELS_FILE, labels_text, replace=True)
    if not keep_manifest:
        write_text_atomic(manifest_file, manifest, replace=True)  # checked with the rest
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


def labels_file_text() -> str:
    return "".join(f"{c}\n" for c in imagenet_classes())


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
            f"{version_dir}: version {options.version} already exists (pass --force to "
            "replace it, or --version N to add another)"
        )
    notes = []
    config_file = model_dir / CONFIG_FILE
    if config_file.exists():
        try:
            changed = _changed_fields(
                parse_config(config_file.read_text(), str(config_file)), config
            )
        except InputError:
            if not options.force:
                raise
            changed = ["(unreadable before)"]
        if changed and not options.force:
            raise InputError(
                f"{config_file}: the versions already there are served with other settings "
                f"({', '.join(changed)}); pass --force to rewrite it"
            )
        if changed:
            notes.append(f"{CONFIG_FILE} rewritten: {', '.join(changed)} changed")
    labels_file = model_dir / LABELS_FILE
    if labels and labels_file.exists() and labels_file.read_text() != labels and not options.force:
        raise InputError(f"{labels_file}: holds other labels; pass --force to rewrite it")
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
                "config serves every version; use another --name"
            )
    return notes


@contextmanager
def _staged_folder(target: Path) -> Iterator[Path]:
    """A hidden temporary folder beside ``target``, renamed onto it only if the block succeeds.

    An existing ``target`` (a version replaced with --force) is moved aside first and removed
    only once the new folder is in place.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old = None
    try:
        yield staging
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not target.exists():
            os.replace(old / target.name, target)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


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
