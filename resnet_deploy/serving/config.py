"""Triton's config.pbtxt for an ONNX model: tensors, batching, instances, warm-up.

The config is built as Triton's own ``inference.ModelConfig`` protobuf (``tritonclient`` ships
it), rendered with protobuf's text format and parsed back, so a field name or value that
Triton's parser would reject fails here rather than at server start. ``check_config`` adds the
rules Triton's ``ValidateModelConfig`` applies to the fields we write.

Batching follows the model. If every input and output has a dynamic first dimension, the config
gets ``max_batch_size`` (32 by default), ``dims`` without the batch dimension and a dynamic
batcher. A model exported with a fixed batch gets ``max_batch_size: 0`` and its full shape:
Triton's ONNX Runtime backend refuses a batching config unless the model's first dimension is
dynamic, so there is nothing to batch.

An image input declares its layout (``format``), as Triton's own ONNX image examples do: its
example clients (``image_client.py``) read it to know how to lay out the pixels they send, and
refuse a model whose input says ``FORMAT_NONE``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from resnet_deploy import __version__
from resnet_deploy.errors import InputError
from resnet_deploy.model.labels import imagenet_classes
from resnet_deploy.model.metadata import ModelMetadata

PLATFORM = "onnxruntime_onnx"
CONFIG_FILE = "config.pbtxt"
LABELS_FILE = "labels.txt"
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_PREFERRED_BATCH_SIZES = (8, 16)  # kept where they fit under max_batch_size
KINDS = {"gpu": mc.ModelInstanceGroup.KIND_GPU, "cpu": mc.ModelInstanceGroup.KIND_CPU}
TRT_WORKSPACE_BYTES = 1 << 30  # the backend's documented default, written out to be visible
# Where the server keeps TensorRT engines, per model name, so a reload or a new instance loads
# the engine instead of building it again (minutes); a path on the server's file system.
TRT_CACHE_ROOT = "/tmp/resnet-deploy-trt"
IMAGE_CHANNELS = 3  # RGB: what our exports take, and what the format rule looks for
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
MAX_NAME_CHARS = 128  # with the repository's name, the KServe manifest's name must fit in 255
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


def check_name(name: str, source: str = "") -> str:
    """A model name is a folder of the repository and part of URLs and file names: the rule
    keeps it one path component that every file system and URL takes as it is."""
    if not _NAME.fullmatch(name) or len(name) > MAX_NAME_CHARS:
        origin = f" ({source}; --name gives another)" if source else ""
        raise InputError(
            f"model name {name[:80]!r}{origin}: a name is 1 to {MAX_NAME_CHARS} letters, "
            "digits, '_', '-' and '.', not starting with '.'",
            options=[] if source else ["name"],
        )
    return name


def model_name(model_path: Path, metadata: ModelMetadata | None, name: str | None) -> str:
    """``name``, else the arch in the model's metadata, else the file's stem; checked."""
    if name is not None:
        return check_name(name)
    if metadata is not None:
        return check_name(metadata.arch, "from the model's arch")
    return check_name(Path(model_path).stem, "from the file's name")


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
                "first dimension is dynamic; export it with a dynamic batch, or give no "
                "max batch size and no preferred batch sizes"
            )
        return 0, ()
    max_batch = DEFAULT_MAX_BATCH_SIZE if options.max_batch_size is None else options.max_batch_size
    if options.preferred_batch_sizes is None:
        preferred = tuple(s for s in DEFAULT_PREFERRED_BATCH_SIZES if s <= max_batch)
    else:
        preferred = tuple(sorted(set(options.preferred_batch_sizes)))
    if preferred and max_batch == 0:
        raise InputError("preferred batch sizes need a max batch size above 0")
    if preferred and preferred[-1] > max_batch:
        raise InputError(
            f"preferred batch size {preferred[-1]} exceeds the max batch size {max_batch}",
            options=["preferred_batch_sizes", "max_batch_size"],
        )
    return max_batch, preferred


def labelled_outputs(outputs: list[TensorSpec]) -> set[str]:
    """The outputs with one value a class, which get labels.txt (Triton's classification)."""
    return {o.name for o in outputs if o.shape and o.shape[-1] == len(imagenet_classes())}


def input_format(dims: tuple[int, ...]) -> int:
    """The ``format`` for an input of these config ``dims`` (no batch dimension).

    ``FORMAT_NCHW`` for ``[3, H, W]``, ``FORMAT_NHWC`` for ``[H, W, 3]``; anything else, an
    ambiguous ``[3, H, 3]`` included, is ``FORMAT_NONE``: Triton allows a format only on three
    dims, and a wrong layout would make clients send transposed pixels.
    """
    if len(dims) != 3:
        return mc.ModelInput.FORMAT_NONE
    first, last = dims[0] == IMAGE_CHANNELS, dims[-1] == IMAGE_CHANNELS
    if first and not last:
        return mc.ModelInput.FORMAT_NCHW
    if last and not first:
        return mc.ModelInput.FORMAT_NHWC
    return mc.ModelInput.FORMAT_NONE


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
        dims = spec.shape[skip:]
        config.input.add(
            name=spec.name, data_type=spec.data_type, dims=dims, format=input_format(dims)
        )
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
            "a fixed shape; turn model warm-up off"
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
    for io in config.input:
        if io.format != mc.ModelInput.FORMAT_NONE and len(io.dims) != 3:
            problems.append(f"input {io.name!r}: FORMAT_NCHW and FORMAT_NHWC need three dims")
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


def labels_file_text() -> str:
    return "".join(f"{c}\n" for c in imagenet_classes())
