from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from google.protobuf import text_format
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from serving import count_model_reads  # tests/ is on sys.path under pytest's default import mode
from tritonclient.grpc import model_config_pb2 as mc

import resnet_deploy.serving.repository as triton_module
from resnet_deploy.cli import main
from resnet_deploy.errors import InputError, OutputError
from resnet_deploy.model.labels import imagenet_classes
from resnet_deploy.model.onnxfile import read_model
from resnet_deploy.runtime.providers import SessionConfig, create_session
from resnet_deploy.serving.config import (
    TensorSpec,
    build_config,
    parse_config,
    render_config,
    resolve_batching,
)
from resnet_deploy.serving.repository import TritonOptions, write_model_repository


def tiny_model(path: Path, classes: int = 1000) -> Path:
    """A dynamic-batch Relu from ``input`` [N, classes] to ``logits``: a repo in milliseconds."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", classes])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def read_config(model_dir: Path) -> mc.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file and folder under ``folder``, hidden ones included, with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(folder.rglob("*"))
    }


def test_dynamic_batch_export_config_matches_the_model(exported, tmp_path: Path) -> None:
    source = exported("resnet18", "torchvision").output
    result = write_model_repository(source, TritonOptions(repo=tmp_path / "repo"))

    config = read_config(tmp_path / "repo" / "resnet18")
    assert config == parse_config(result.config_text)
    assert (config.name, config.platform, config.max_batch_size) == (
        "resnet18",
        "onnxruntime_onnx",
        32,
    )
    session = create_session(source, SessionConfig(provider="cpu"))  # ONNX Runtime's own view
    (ort_in,), (ort_out,) = session.get_inputs(), session.get_outputs()
    assert [(i.name, i.data_type, list(i.dims), i.format) for i in config.input] == [
        (ort_in.name, mc.TYPE_FP32, ort_in.shape[1:], mc.ModelInput.FORMAT_NCHW)
    ]
    assert [(o.name, list(o.dims), o.label_filename) for o in config.output] == [
        (ort_out.name, ort_out.shape[1:], "labels.txt")
    ]
    assert ort_in.type == ort_out.type == "tensor(float)"
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.kind, g.count) for g in config.instance_group] == [
        (mc.ModelInstanceGroup.KIND_GPU, 1)
    ]
    assert [(w.batch_size, list(w.inputs["input"].dims)) for w in config.model_warmup] == [
        (1, [3, 224, 224]),
        (32, [3, 224, 224]),
    ]
    assert all(w.inputs["input"].random_data for w in config.model_warmup)
    assert onnx.load(result.model_file) == onnx.load(source)


def test_fixed_batch_export_gets_max_batch_size_0_and_full_dims(exported, tmp_path: Path) -> None:
    source = exported("resnet18", "torchvision", batch=4).output
    write_model_repository(source, TritonOptions(repo=tmp_path, name="fixed"))

    config = read_config(tmp_path / "fixed")
    assert config.max_batch_size == 0
    assert [list(i.dims) for i in config.input] == [[4, 3, 224, 224]]
    # Triton allows a layout only on three dims; image_client.py cannot serve this model
    assert config.input[0].format == mc.ModelInput.FORMAT_NONE
    assert [list(o.dims) for o in config.output] == [[4, 1000]]
    assert not config.HasField("dynamic_batching")
    assert [(w.batch_size, list(w.inputs["input"].dims)) for w in config.model_warmup] == [
        (1, [4, 3, 224, 224])
    ]
    with pytest.raises(InputError, match="batch is fixed"):
        write_model_repository(source, TritonOptions(repo=tmp_path, name="b", max_batch_size=8))
    assert not (tmp_path / "b").exists()


def test_tensorrt_fp16_on_cpu_options_and_warmup(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx")
    options = TritonOptions(
        repo=tmp_path / "repo",
        name="trt",
        tensorrt=True,
        fp16=True,
        instances=3,
        max_batch_size=4,
        warmup=False,
    )
    write_model_repository(model, options)
    config = read_config(tmp_path / "repo" / "trt")
    (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert (trt.name, trt.parameters["precision_mode"]) == ("tensorrt", "FP16")
    assert trt.parameters["trt_engine_cache_enable"] == "1"
    assert trt.parameters["trt_engine_cache_path"] == "/tmp/resnet-deploy-trt/trt"
    assert config.instance_group[0].count == 3
    assert list(config.dynamic_batching.preferred_batch_size) == []  # 8 and 16 exceed 4
    assert not config.model_warmup
    write_model_repository(model, TritonOptions(repo=tmp_path / "repo", name="c", kind="cpu"))
    assert read_config(tmp_path / "repo" / "c").instance_group[0].kind == (
        mc.ModelInstanceGroup.KIND_CPU
    )


def test_labels_are_the_1000_imagenet_classes_in_index_order(tmp_path: Path) -> None:
    result = write_model_repository(tiny_model(tmp_path / "m.onnx"), TritonOptions(repo=tmp_path))
    lines = result.labels_file.read_text().splitlines()
    assert len(lines) == len(set(lines)) == 1000
    assert (lines[0], lines[207], lines[999]) == ("tench", "golden retriever", "toilet tissue")
    assert tuple(lines) == imagenet_classes()


def test_output_without_1000_classes_gets_no_labels(tmp_path: Path) -> None:
    result = write_model_repository(
        tiny_model(tmp_path / "m.onnx", 10), TritonOptions(repo=tmp_path)
    )
    assert result.labels_file is None
    assert not (tmp_path / "m" / "labels.txt").exists()
    assert read_config(tmp_path / "m").output[0].label_filename == ""


def test_existing_version_refused_without_force_and_files_unchanged(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    write_model_repository(model, TritonOptions(repo=repo))
    before = snapshot(repo)

    with pytest.raises(InputError, match="version 1 already exists"):
        write_model_repository(model, TritonOptions(repo=repo))
    with pytest.raises(InputError, match="other settings"):
        write_model_repository(model, TritonOptions(repo=repo, version=2, instances=2))
    assert snapshot(repo) == before

    result = write_model_repository(model, TritonOptions(repo=repo, instances=2, force=True))
    assert read_config(repo / "m").instance_group[0].count == 2
    assert any("instance_group" in note for note in result.notes)
    assert sorted(p.name for p in (repo / "m").iterdir()) == ["1", "config.pbtxt", "labels.txt"]


def test_new_version_keeps_the_old_one(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    write_model_repository(model, TritonOptions(repo=repo))
    version_1 = (repo / "m" / "1" / "model.onnx").read_bytes()

    result = write_model_repository(model, TritonOptions(repo=repo, version=2))
    assert result.versions_on_disk == [1, 2]
    assert (repo / "m" / "1" / "model.onnx").read_bytes() == version_1
    assert onnx.load(repo / "m" / "2" / "model.onnx") == onnx.load(model)


def test_new_version_with_other_inputs_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_model_repository(tiny_model(tmp_path / "m.onnx"), TritonOptions(repo=repo))
    before = snapshot(repo)
    other = tiny_model(tmp_path / "other.onnx", 10)
    with pytest.raises(InputError, match="version 1 has other inputs or outputs"):
        write_model_repository(other, TritonOptions(repo=repo, name="m", version=2))
    assert snapshot(repo) == before


def test_a_failure_while_writing_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def fail_midway(folder: Path, files: dict[str, bytes]) -> None:
        (folder / "1").mkdir()
        (folder / "1" / "model.onnx").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(triton_module, "_write_files", fail_midway)
    repo = tmp_path / "repo"
    with pytest.raises(OutputError, match=r"nothing written \(disk full"):
        write_model_repository(tiny_model(tmp_path / "m.onnx"), TritonOptions(repo=repo))
    assert snapshot(repo) == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('name: "m" platform: "onnxruntime_onnx" input { name: "x" dimz: [3] }', "dimz"),
        ('name: "m" platform: "onnxruntime_onnx" max_batch_size: 8 kind: KIND_GPU', "kind"),
        ('name: "m" input { name: "x" data_type: TYPE_FLOAT32 dims: [3] }', "TYPE_FLOAT32"),
        (
            'name: "m" platform: "onnxruntime_onnx" max_batch_size: 4 '
            'input { name: "x" data_type: TYPE_FP32 dims: [3] } '
            'output { name: "y" data_type: TYPE_FP32 dims: [3] } '
            "instance_group { kind: KIND_GPU count: 1 } "
            "dynamic_batching { preferred_batch_size: [8] }",
            "preferred batch size 8",
        ),
        (
            'name: "m" platform: "onnxruntime_onnx" '
            'input { name: "x" data_type: TYPE_FP32 dims: [0] } '
            "instance_group { kind: KIND_CPU count: 1 }",
            "dims must be >= 1",
        ),
        (
            'name: "m" platform: "onnxruntime_onnx" '
            'input { name: "x" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [1, 3, 8, 8] } '
            "instance_group { kind: KIND_CPU count: 1 }",
            "need three dims",
        ),
    ],
)
def test_invalid_config_text_is_caught(text: str, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        parse_config(text)


def served_input(shape: tuple[int, ...]) -> mc.ModelInput:
    """The config input `triton` and `serve` write for a model input of ``shape`` (ONNX's,
    batch first), after the render-and-parse round trip."""
    tensor = TensorSpec("x", "TYPE_FP32", shape)
    options = TritonOptions(repo=Path("."), warmup=False)
    batching = resolve_batching(options, [tensor], [TensorSpec("y", "TYPE_FP32", shape[:1])])
    config = build_config("m", [tensor], [], options, *batching, labelled=set())
    return parse_config(render_config(config, "test")).input[0]


NCHW, NHWC, NONE = (mc.ModelInput.FORMAT_NCHW, mc.ModelInput.FORMAT_NHWC, mc.ModelInput.FORMAT_NONE)


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        ((-1, 3, 224, 224), NCHW),  # our exports
        ((-1, 3, -1, -1), NCHW),  # any image size
        ((-1, 3, 32, 48), NCHW),
        ((-1, 224, 224, 3), NHWC),  # e.g. a TensorFlow export
        ((4, 3, 224, 224), NONE),  # fixed batch: four config dims
        ((-1, 1, 28, 28), NONE),  # one channel: not an RGB image
        ((-1, 3, 224, 3), NONE),  # either layout: not guessed
        ((-1, 3, 224), NONE),
        ((-1, 1000), NONE),
        ((-1, 2, 3, 224, 224), NONE),
    ],
)
def test_an_image_input_declares_its_layout(shape: tuple[int, ...], layout: int) -> None:
    assert served_input(shape).format == layout


@settings(max_examples=200, deadline=None)
@given(shape=st.lists(st.sampled_from([-1, 1, 2, 3, 4, 224]), min_size=1, max_size=5))
def test_a_declared_layout_is_one_image_clients_can_use(shape: list[int]) -> None:
    """Whatever the shape, the config parses back as written, and a declared layout holds
    what Triton's image_client.py reads from it: three dims, three channels where it says."""
    x = served_input((-1, *shape))
    assert list(x.dims) == shape
    if x.format == NCHW:
        assert len(shape) == 3 and shape[0] == 3 and shape[2] != 3
    elif x.format == NHWC:
        assert len(shape) == 3 and shape[2] == 3 and shape[0] != 3
    else:
        assert x.format == NONE
        assert len(shape) != 3 or (shape[0] == 3) == (shape[2] == 3)


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"fp16": True}, "it needs TensorRT"),
        ({"tensorrt": True, "kind": "cpu"}, "needs GPU instances"),
        ({"name": "../evil"}, "model name"),
        ({"version": 0}, "the model version must be at least 1"),
        ({"preferred_batch_sizes": (8, 64)}, "exceeds the max batch size 32"),
    ],
)
def test_bad_options_refused_before_writing(tmp_path: Path, options: dict, problem: str) -> None:
    model = tiny_model(tmp_path / "m.onnx")
    with pytest.raises(InputError, match=problem):
        write_model_repository(model, TritonOptions(repo=tmp_path / "repo", **options))
    assert not (tmp_path / "repo").exists()


def test_cli_json_and_one_line_error(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "m.onnx")
    args = [
        "triton",
        str(model),
        "--repo",
        str(tmp_path / "repo"),
        "--preferred-batch-sizes",
        "2,4",
    ]
    result = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["versions_on_disk"] == [1]
    assert record["max_batch_size"] == 32
    assert "preferred_batch_size: [2, 4]" in record["config_text"]

    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2
    assert again.output.strip().count("\n") == 0
    assert "already exists" in again.output


def test_the_repository_writer_reads_the_model_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A path is parsed once; a ModelFile the command already read is not parsed again."""
    model = tiny_model(tmp_path / "m.onnx")
    reads = count_model_reads(monkeypatch)
    write_model_repository(model, TritonOptions(repo=tmp_path / "a", kind="cpu"))
    assert reads == [model]
    loaded = read_model(model)
    reads.clear()
    result = write_model_repository(loaded, TritonOptions(repo=tmp_path / "b", kind="cpu"))
    assert reads == [] and result.model_file.read_bytes() == loaded.proto.SerializeToString()
