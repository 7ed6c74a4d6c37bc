"""No command may destroy a file, crash or run unbounded on bad input: each class of bad input,
tested as a class (table-driven over every command, or property-based over its space)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from resnet_deploy import cli as cli_package
from resnet_deploy.cli import main
from resnet_deploy.cli.options import Number
from resnet_deploy.errors import CheckpointError, InputError, OutputError
from resnet_deploy.files import atomic_output, check_output_path, check_outputs
from resnet_deploy.model.metadata import ModelMetadata, read_metadata
from resnet_deploy.model.resnet import build_model


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, code: int = 2) -> str:
    """The single ``Error:`` line of a clean failure; asserts there is no traceback."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture(scope="module")
def files(exported, tmp_path_factory) -> dict[str, Path]:
    """A ResNet18 model, its checkpoint, an input array and an image, in one folder."""
    folder = tmp_path_factory.mktemp("inputs")
    model = folder / "model.onnx"
    model.write_bytes(exported("resnet18").output.read_bytes())
    weights = folder / "weights.pth"
    torch.save(build_model("resnet18").model.state_dict(), weights)
    np.save(folder / "inputs.npy", np.zeros((1, 3, 224, 224), np.float32))
    Image.new("RGB", (300, 240), (120, 80, 40)).save(folder / "cat.png")
    images = folder / "images"
    images.mkdir()
    Image.new("RGB", (64, 64)).save(images / "a.png")
    return {
        "model": model,
        "weights": weights,
        "npy": folder / "inputs.npy",
        "image": folder / "cat.png",
        "images": images,
    }


# --- 1. every output flag of every command, pointed at one of its own inputs ---------------

SELF_OVERWRITES = [
    ("verify {model} --json {model}", "model"),
    ("verify {model} --json {model} --force", "model"),
    ("verify {model} --inputs {npy} --json {npy} --force", "npy"),
    ("verify {model} --weights {weights} --json {weights} --force", "weights"),
    ("bench {model} --json {model} --force", "model"),
    ("bench {model} --csv {model} --force", "model"),
    ("bench {model} --plot {model} --force", "model"),
    ("bench {model} --scenario offline --json {model} --force", "model"),
    ("predict {model} {image} --json {model} --force", "model"),
    ("predict {model} {image} --json {image} --force", "image"),
    ("optimize {model} --precision int8 -o {model} --force", "model"),
    ("optimize {model} --precision int8 --json {model} --force", "model"),
    ("optimize {model} --precision int8 --calibration {images} -o {images}/a.png --force", "image"),
    ("triton {model} --repo {tmp}/repo --json {model} --force", "model"),
    ("export --weights {weights} -o {weights} --force", "weights"),
    ("export --weights {weights} --json {weights} --force", "weights"),
    ("run --weights {weights} -o {folder} --force", "weights"),
]


@pytest.mark.parametrize(("command", "victim"), SELF_OVERWRITES)
def test_an_output_that_is_an_input_is_refused_before_any_work(
    files, tmp_path: Path, command: str, victim: str
) -> None:
    names = {k: str(v) for k, v in files.items()} | {"tmp": str(tmp_path)}
    names["folder"] = str(files["weights"].parent)  # the run folder would hold the weights
    before = {name: digest(p) for name, p in files.items() if p.is_file()}
    before_images = sorted(p.name for p in files["images"].iterdir())
    result = invoke(*command.format(**names).split())
    assert re.search(
        r"would overwrite (the input|a file of the input folder)", one_line_error(result)
    )
    assert {name: digest(p) for name, p in files.items() if p.is_file()} == before
    assert sorted(p.name for p in files["images"].iterdir()) == before_images


def test_two_outputs_of_one_command_may_not_be_the_same_file(files, tmp_path: Path) -> None:
    out = tmp_path / "same.json"
    result = invoke("bench", files["model"], "--json", out, "--csv", out)
    assert "two outputs of the same command" in one_line_error(result)
    result = invoke("run", "-o", tmp_path / "run", "--json", tmp_path / "run" / "report.json")
    assert "which this command writes itself" in one_line_error(result)
    assert not out.exists() and not (tmp_path / "run").exists()


def test_an_output_in_a_missing_folder_or_under_a_file_fails_before_the_work(
    files, tmp_path: Path
) -> None:
    result = invoke("verify", files["model"], "--json", tmp_path / "no" / "r.json")
    assert "output folder" in one_line_error(result) and "does not exist" in result.output
    result = invoke("verify", files["model"], "--json", files["npy"] / "r.json")
    assert "is a regular file, not a folder" in one_line_error(result)


# --- 2. what the atomic write may replace ----------------------------------------------------

KINDS = ["missing", "regular", "folder", "fifo", "symlink", "chardev"]


def make(kind: str, path: Path) -> None:
    if kind == "regular":
        path.write_text("the user's file")
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        (path.parent / "target.txt").write_text("linked")
        path.symlink_to(path.parent / "target.txt")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kind=st.sampled_from(KINDS), force=st.booleans(), is_input=st.booleans())
def test_output_checks_over_every_kind_of_target(
    tmp_path_factory, kind: str, force: bool, is_input: bool
) -> None:
    folder = tmp_path_factory.mktemp("kinds")
    path = Path("/dev/null") if kind == "chardev" else folder / "out.json"
    make(kind, path)
    inputs = [path] if is_input and kind != "missing" else []
    refused = (
        kind not in ("missing", "regular") or bool(inputs) or (kind == "regular" and not force)
    )
    if refused:
        with pytest.raises(InputError) as caught:
            check_output_path(path, force=force, inputs=inputs)
        message = str(caught.value)
        if kind in ("folder", "fifo", "symlink", "chardev"):
            kind_name = {"fifo": "FIFO", "chardev": "character device"}.get(kind, kind)
            assert kind_name in message
    else:
        check_output_path(path, force=force, inputs=inputs)
    if kind == "chardev":
        assert Path("/dev/null").is_char_device()


def test_dev_null_as_output_is_refused_even_with_force(files) -> None:
    result = invoke("verify", files["model"], "--json", "/dev/null", "--force")
    assert "is a character device" in one_line_error(result)
    assert Path("/dev/null").is_char_device()


def test_no_clobber_holds_at_the_rename(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    appeared = pytest.raises(OutputError, match="appeared while this command ran")
    with appeared, atomic_output(target) as tmp:
        tmp.write_text("new")
        target.write_text("someone else's file")  # appears during the long work
    assert target.read_text() == "someone else's file"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    with atomic_output(target, replace=True) as tmp:  # --force replaces a regular file
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_a_fifo_that_appears_at_the_target_is_never_replaced(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    replaced_fifo = pytest.raises(OutputError, match="is now a FIFO")
    with replaced_fifo, atomic_output(target, replace=True) as tmp:
        tmp.write_text("{}")
        os.mkfifo(target)
    assert target.is_fifo() and len(list(tmp_path.iterdir())) == 1


def test_check_outputs_names_two_identical_outputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="two outputs"):
        check_outputs([tmp_path / "a", tmp_path / "." / "a"], force=True)


# --- 4. SIGTERM ------------------------------------------------------------------------------


def leftovers(tmpdir: Path) -> list[str]:
    """What a run left in its temporary folder, less the caches torch keeps there on purpose
    (its inductor cache folder and a session-id file)."""
    kept = (".ses", "torchinductor_")
    return sorted(p.name for p in tmpdir.iterdir() if not p.name.startswith(kept))


def run_and_signal(
    args: list[str],
    cwd: Path,
    wait_for: str,
    tmpdir: Path,
    until: Callable[[], bool] = lambda: True,
) -> tuple[int, str]:
    """Start a command, send SIGTERM once stderr shows ``wait_for`` and ``until()`` holds,
    return (code, stderr)."""
    env = os.environ | {"TMPDIR": str(tmpdir)}
    command = [sys.executable, "-m", "resnet_deploy", *args]
    process = subprocess.Popen(command, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        deadline = time.monotonic() + 240
        for line in process.stderr:  # bounded: the process ends, or the deadline kills it
            seen.append(line)
            if wait_for in line:
                while not until() and process.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(0.5)
                process.send_signal(signal.SIGTERM)
                break
            assert time.monotonic() < deadline, "".join(seen)
        seen.append(process.stderr.read())
        return process.wait(timeout=60), "".join(seen)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.slow
def test_sigterm_during_export_exits_143_leaving_nothing(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    code, stderr = run_and_signal(
        ["export", "--arch", "resnet18", "-o", "m.onnx"], tmp_path, "onnxsim", tmpdir
    )
    assert code == 143, stderr
    assert "Terminated; nothing was written." in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
    assert leftovers(tmpdir) == []


@pytest.mark.slow
def test_sigterm_during_quantization_removes_its_temporary_models(files, tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    model = tmp_path / "model.onnx"
    model.write_bytes(files["model"].read_bytes())
    code, stderr = run_and_signal(
        ["optimize", "model.onnx", "--precision", "int8", "--samples", "32"],
        tmp_path,
        "calibrating (32 in all)",
        tmpdir,
        until=lambda: leftovers(tmpdir) != [],  # the quantizer's temporary models exist
    )
    assert code == 143, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "tmp"]
    assert leftovers(tmpdir) == []


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_loadgen_run_stops_cleanly_on_a_signal(files, tmp_path: Path, stop, code) -> None:
    """LoadGen cannot be aborted; the run must still end with the right code, no crash, and
    no temporary log folder left."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    args = [str(files["model"]), "--scenario", "server", "--target-qps", "5"]
    command = [sys.executable, "-m", "resnet_deploy", "bench", *args, "--min-duration", "120"]
    env = os.environ | {"TMPDIR": str(tmpdir)}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in process.stderr:  # bounded: the run lasts 120 s at most, then ends
            seen.append(line)
            if "LoadGen Server" in line:
                time.sleep(3)  # LoadGen is issuing queries by now
                process.send_signal(stop)
                break
        seen.append(process.stderr.read())
        assert process.wait(timeout=60) == code, "".join(seen)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = "".join(seen)
    assert "Traceback" not in output and "terminate called" not in output, output
    assert leftovers(tmpdir) == []


# --- 5. metadata is untrusted input ----------------------------------------------------------

BAD_METADATA = {
    "arch": ['"resnet9"', "", "x" * 5000],
    "variant": ["paper"],
    "image_size": ["0", "99999", "224.5", "true", '"224"', "nan"],
    "batch": ["0", "-3", "many", "1e9"],
    "seed": ["1.5", '"zero"', str(2**70)],
    "mean": ["[0.5, 0.5]", "[NaN, 0, 0]", '["a", 0, 0]', "[Infinity, 0, 0]", "0.5"],
    "std": ["[0, 0.2, 0.2]", "[-1, 1, 1]", "[1, 1, 1, 1]", "[1e999, 1, 1]"],
    "opset": ["-1", "x"],
    "precision": ["int4"],
    "layout": ["NHWC"],
    "input_name": ['"images"', ""],
    "output_name": ["probs"],
    "weights_sha256": ["abc"],
    "target": ["arm", "CPU"],
}
BAD_CASES = [(key, value) for key, values in BAD_METADATA.items() for value in values]


@pytest.fixture(scope="module")
def proto(files) -> onnx.ModelProto:
    return onnx.load(str(files["model"]))


def with_prop(proto: onnx.ModelProto, key: str, value: str) -> onnx.ModelProto:
    changed = onnx.ModelProto()
    changed.CopyFrom(proto)
    for prop in changed.metadata_props:
        if prop.key == key:
            prop.value = value
    return changed


@pytest.mark.parametrize(("key", "value"), BAD_CASES)
def test_every_bad_metadata_value_is_named_by_its_key(proto, key: str, value: str) -> None:
    with pytest.raises(InputError, match=rf"^m\.onnx: metadata key '{key}'"):
        read_metadata(with_prop(proto, key, value), "m.onnx")


@settings(max_examples=80, deadline=None)
@given(
    mean=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=4),
    std=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=4),
)
def test_mean_and_std_are_three_finite_numbers_with_std_above_zero(mean, std) -> None:
    props = ModelMetadata(
        arch="resnet18", variant="torchvision", weights="random", weights_sha256="", seed=0,
        image_size=224, batch="dynamic", opset=18, exporter="dynamo", toolkit_version="0",
    ).to_props()  # fmt: skip
    props["mean"], props["std"] = json.dumps(mean), json.dumps(std)
    valid = (
        len(mean) == 3
        and len(std) == 3
        and all(np.isfinite(mean + std))
        and min(std, default=0) > 0
    )
    if valid:
        metadata = ModelMetadata.from_props(props)
        assert metadata.mean == tuple(mean) and metadata.std == tuple(std)
    else:
        with pytest.raises(InputError, match=r"metadata key '(mean|std)'"):
            ModelMetadata.from_props(props)


def test_predict_on_a_file_with_zero_std_exits_2_not_nan(files, proto, tmp_path: Path) -> None:
    path = tmp_path / "zero-std.onnx"
    onnx.save(with_prop(proto, "std", "[0, 0, 0]"), path)
    result = invoke("predict", path, files["image"])
    assert "metadata key 'std': every value must be above 0" in one_line_error(result)


# --- 6. checkpoints ---------------------------------------------------------------------------


def broken_state(change: str) -> dict:
    state = build_model("resnet18").model.state_dict()
    if change == "nan":
        state["layer2.0.conv1.weight"] = state["layer2.0.conv1.weight"].clone()
        state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("inf")
    elif change == "int":
        state["fc.weight"] = state["fc.weight"].to(torch.int32)
    elif change == "complex":
        state["fc.bias"] = state["fc.bias"].to(torch.complex64)
    elif change == "key":
        state[7] = torch.zeros(1)
    return state


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("nan", "layer2.0.conv1.weight: holds NaN or infinite values"),
        ("int", "fc.weight: torch.int32 values, expected floating point"),
        ("complex", "fc.bias: torch.complex64 values, expected floating point"),
        ("key", "key 7 is not a string"),
    ],
)
def test_checkpoint_values_and_keys_are_checked(save_state_dict, change, message) -> None:
    with pytest.raises(CheckpointError, match=re.escape(message)):
        build_model("resnet18", weights=save_state_dict(broken_state(change)))


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_weights_path_that_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "weights.pth"
    make(kind, path)
    kind_name = {"fifo": "FIFO"}.get(kind, kind)
    result = invoke("export", "--weights", path, "-o", tmp_path / "m.onnx")
    assert f"not a regular file (a {kind_name})" in one_line_error(result)


def test_a_safetensors_header_length_past_the_file_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes((2**62).to_bytes(8, "little") + b'{"a": 1}')
    with pytest.raises(CheckpointError, match=r"truncated \(16 bytes\)"):
        build_model("resnet18", weights=path)


# --- 7. outputs that are not [N, 1000] --------------------------------------------------------


def test_a_model_with_another_class_count_is_refused_naming_both_shapes(
    files, proto, tmp_path: Path
) -> None:
    changed = onnx.ModelProto()
    changed.CopyFrom(proto)
    changed.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 10
    path = tmp_path / "ten.onnx"
    onnx.save(changed, path)
    for command in ("verify", "bench", "predict"):
        args = [command, path] + ([files["image"]] if command == "predict" else [])
        line = one_line_error(invoke(*args))
        assert "has shape [batch, 10], but the eager resnet18 gives [N, 1000]" in line, line


# --- 8-11. resources ------------------------------------------------------------------------


def test_an_extreme_aspect_ratio_is_refused_with_its_size(files, tmp_path: Path) -> None:
    path = tmp_path / "line.png"
    Image.new("RGB", (20000, 1)).save(path)
    assert path.stat().st_size < 1000
    result = invoke("predict", files["model"], path)
    assert result.exit_code == 2 and "a 20000x1 image would be resized to" in result.output


def test_a_batch_that_cannot_fit_is_refused_before_allocating(files) -> None:
    result = invoke("verify", files["model"], "--batch-sizes", "1,60000")
    line = one_line_error(result)
    assert "verify at batch 60000, 224x224 needs about" in line and "available" in line


def test_a_loadgen_target_whose_schedule_cannot_fit_is_refused_up_front(files) -> None:
    args = ["--scenario", "server", "--target-qps", "900000", "--min-duration", "3600"]
    line = one_line_error(invoke("bench", files["model"], *args))
    assert "LoadGen's schedule of 3.24e+09 queries (900000/s for 3600 s) needs about" in line
    assert line.startswith("Error: --target-qps, --min-duration: ")
    assert line.endswith("lower the target QPS or the minimum duration")


@pytest.mark.parametrize(
    "args",
    [
        ["export", "--image-size", "99999"],
        ["bench", "{model}", "--threads", "100000"],
        ["bench", "{model}", "--scenario", "server", "--target-qps", "1e12"],
        ["verify", "{model}", "--min-cosine", "2"],
        ["verify", "{model}", "--seed", str(2**64)],
        ["triton", "{model}", "--repo", "r", "--version", str(2**64)],
        ["optimize", "{model}", "--precision", "int8", "--guard-samples", "0"],
    ],
)
def test_out_of_range_options_are_parse_time_errors(files, args) -> None:
    result = invoke(*[a.format(model=files["model"]) for a in args])
    assert result.exit_code == 2 and "Invalid value for" in result.output, result.output
    assert "Traceback" not in result.output


def float_options() -> list[tuple[str, str]]:
    """(command, --option) for every option of every command that takes a number."""
    found = []
    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(param.type, Number):
                found.append((name, param.opts[0]))
    return found


def test_every_command_parses_numbers_through_one_type() -> None:
    options = float_options()
    assert len(options) >= 25
    assert ("bench", "--duration") in options and ("verify", "--atol") in options


@pytest.mark.parametrize(("command", "option"), float_options())
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
def test_nan_and_infinity_are_refused_at_parse_time(files, command, option, value) -> None:
    args = [command] + ([str(files["model"])] if command not in ("export", "run") else [])
    if command == "predict":
        args.append(str(files["image"]))
    if command == "optimize":
        args += ["--precision", "int8"]
    if command == "triton":
        args += ["--repo", "r"]
    result = invoke(*args, option, value)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output, result.output


# --- 13-15. zero is a value; cheap checks first; exit codes ---------------------------------


def test_zero_scenario_values_reach_the_library(files, monkeypatch) -> None:
    seen = {}

    def capture(model, options, progress):
        seen["options"] = options
        raise InputError("stop here")

    monkeypatch.setattr("resnet_deploy.perf.loadgen.run_scenario", capture)
    invoke("bench", files["model"], "--scenario", "server", "--batch-timeout-ms", "0")
    assert seen["options"].batch_timeout_ms == 0.0
    result = invoke("bench", files["model"], "--scenario", "server", "--target-qps", "0")
    assert "must be above 0, got 0" in one_line_error(result)


def test_an_empty_inputs_folder_fails_before_any_session(files, tmp_path, monkeypatch) -> None:
    def no_session(*args, **kwargs):
        raise AssertionError("a session was built before the cheap checks")

    monkeypatch.setattr("resnet_deploy.check.verify.create_session", no_session)
    result = invoke("verify", files["model"], "--inputs", tmp_path)
    assert "no image files" in one_line_error(result)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    result = invoke("verify", files["model"], "--inputs", objects)
    assert "not a readable .npy array" in one_line_error(result)


@pytest.mark.slow
def test_a_tool_failure_exits_3_not_as_bad_input(tmp_path: Path, monkeypatch) -> None:
    import onnxsim

    def broken(*args, **kwargs):
        raise RuntimeError("internal error in a pass\nand more lines")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    result = invoke("export", "--arch", "resnet18", "-o", tmp_path / "m.onnx")
    line = one_line_error(result, code=3)
    assert line == "Error: onnxsim failed: RuntimeError: internal error in a pass"
    assert list(tmp_path.iterdir()) == []


# --- structure -----------------------------------------------------------------------------


def test_python_m_works_and_help_does_not_import_torch() -> None:
    code = (
        "import sys; from resnet_deploy.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "for name in main.commands:\n"
        "    try:\n        main([name, '--help'])\n    except SystemExit:\n        pass\n"
        "print('torch' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip().endswith("False")
    done = subprocess.run(
        [sys.executable, "-m", "resnet_deploy", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.startswith("resnet-deploy, version")


def test_every_command_with_an_output_takes_force() -> None:
    for name, command in main.commands.items():
        params = {p.name for p in command.params}
        if params & {"json_out", "output", "csv_out", "plot_out", "folder", "repo"}:
            assert "force" in params, name


def test_the_cli_defines_each_option_once() -> None:
    """An option more than one command takes is one decorator in cli/options.py: a flag
    spelled out in two places is two definitions that drift apart."""
    folder = Path(cli_package.__file__).parent
    defined: dict[str, list[str]] = {}
    for module in sorted(folder.glob("*.py")):
        for flag in re.findall(r'click\.option\(\s*(?:"-\w", )?"(--[\w-]+)', module.read_text()):
            defined.setdefault(flag, []).append(module.name)
    # run's --int8 is a flag (also quantize), tune's the int8 file: two options, one spelling
    twice = {flag: where for flag, where in defined.items() if len(where) > 1}
    assert twice == {"--int8": ["run.py", "tune.py"]}, twice
    for flag in ("--provider", "--batch-sizes", "--json", "--force", "--instances", "--warmup"):
        assert defined[flag] == ["options.py"], flag
