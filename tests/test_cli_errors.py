"""The rule for every command: bad input gives one line naming the problem and exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from resnet_deploy.cli import main


@pytest.fixture(scope="module")
def files(exported, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    model = folder / "model.onnx"
    model.write_bytes(exported("resnet18").output.read_bytes())
    (folder / "text.onnx").write_text("hello\n")
    (folder / "cut.onnx").write_bytes(model.read_bytes()[:3000])
    np.save(folder / "small.npy", np.zeros((2, 3, 100, 100), np.float32))
    np.save(folder / "ints.npy", np.zeros((2, 3, 224, 224), np.int64))
    return {p.stem: p for p in folder.iterdir()}


CASES = [
    (["verify", "{text}"], r"text.onnx: truncated or not an ONNX model \(6 bytes\)"),
    (["bench", "{cut}"], r"cut.onnx: truncated or not an ONNX model \(3000 bytes\)"),
    (["triton", "{text}", "--repo", "{tmp}/repo"], "truncated or not an ONNX model"),
    (["verify", "{model}", "--inputs", "{small}"], "small.npy holds 100x100 inputs"),
    (["verify", "{model}", "--inputs", "{ints}"], "ints.npy: expected float32 values, got int64"),
    (["bench", "{model}", "--provider", "foo"], "unknown provider 'foo'; use cpu, cuda"),
    pytest.param(
        ["verify", "{model}", "--provider", "cuda"],
        "could not start CUDAExecutionProvider",
        marks=pytest.mark.no_gpu,
    ),
    (["bench", "{model}", "--batch-sizes", "0"], "'--batch-sizes': must be at least 1, got 0"),
    (["verify", "{model}", "--batch-sizes", "2,-1"], "'--batch-sizes': must be at least 1, got -1"),
    (
        ["optimize", "{model}", "--precision", "int8", "-o", "{model}", "--force"],
        "output would overwrite the input .*model.onnx",
    ),
    (["predict", "{model}", "{tmp}/none/*.jpg"], "no images found"),
    (["export", "-o", "{tmp}/no/such/m.onnx"], "output folder .* does not exist"),
    (["export", "--weights", "{text}", "-o", "{tmp}/x.onnx"], "not a PyTorch checkpoint"),
]


@pytest.mark.parametrize(
    ("args", "message"), CASES, ids=[" ".join(getattr(c, "values", c)[0][:2]) for c in CASES]
)
def test_bad_input_is_one_line_and_exit_2(files, tmp_path: Path, args, message: str) -> None:
    names = {k: str(v) for k, v in files.items()} | {"tmp": str(tmp_path)}
    result = CliRunner().invoke(main, [a.format(**names) for a in args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1
    assert "Traceback" not in result.output
    assert re.search(message, errors[0]), errors[0]
    assert not (tmp_path / "x.onnx").exists()


FLAG_CASES = [
    (
        ["bench", "{absent}", "--warmup", "1", "--warmup-s", "1"],
        "Error: --warmup, --warmup-s: give the warm-up either as runs or as seconds, not both",
    ),
    (
        ["bench", "{absent}", "--cuda-graph"],
        "Error: --cuda-graph, --provider: CUDA graphs and the cuDNN options need the cuda provider",
    ),
    (
        ["bench", "{absent}", "--scenario", "server", "--find-peak", "--accuracy"],
        "Error: --find-peak, --accuracy: the peak search measures performance; run the accuracy "
        "mode separately",
    ),
]


@pytest.mark.parametrize(("args", "line"), FLAG_CASES, ids=[c[0][-1] for c in FLAG_CASES])
def test_the_flags_of_the_options_an_error_names_lead_its_line(
    tmp_path: Path, args: list[str], line: str
) -> None:
    """The library names option fields (``warmup_runs``); the CLI leads with the flags the user
    typed (``--warmup``). These are refused before the model is even read: it does not exist."""
    absent = tmp_path / "absent.onnx"
    result = CliRunner().invoke(main, [a.format(absent=absent) for a in args])
    assert result.exit_code == 2
    assert result.output.splitlines() == [line]


def test_debug_shows_the_traceback(files) -> None:
    result = CliRunner().invoke(main, ["--debug", "verify", str(files["text"])])
    assert result.exit_code != 0
    assert result.exc_info is not None and "truncated or not an ONNX" in str(result.exception)


def test_a_full_disk_is_one_line_and_keeps_the_old_file(files, tmp_path: Path, monkeypatch) -> None:
    def full_disk(proto, path):
        Path(path).write_bytes(b"half a model")
        raise OSError(28, "No space left on device")

    output = tmp_path / "m.onnx"
    output.write_bytes(b"the user's file")
    monkeypatch.setattr(onnx, "save", full_disk)
    args = ["export", "--arch", "resnet18", "-o", str(output), "--force"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {output}: writing failed, nothing written (No space left on device)"
    )
    assert output.read_bytes() == b"the user's file"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
