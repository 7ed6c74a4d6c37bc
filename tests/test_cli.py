from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import resnet_deploy.convert.export as export_module
from resnet_deploy import __version__
from resnet_deploy.cli import main


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def test_version(cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


def test_every_command_has_help_with_an_example(cli) -> None:
    assert cli("--help").exit_code == 0
    for name in main.commands:
        result = cli(name, "--help")
        assert result.exit_code == 0, name
        assert "resnet-deploy " + name in result.output, f"{name} --help shows no example"


def test_export_json_record(cli, tmp_path: Path) -> None:
    output = tmp_path / "r18.onnx"
    result = cli("export", "--arch", "resnet18", "--batch", "4", "-o", output, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["output"] == str(output)
    assert record["metadata"]["batch"] == "4"
    assert record["ops_final"]["Conv"] == 20
    assert record["file_bytes"] == output.stat().st_size
    assert set(record["step_seconds"]) == {
        "build model",
        "torch.onnx.export",
        "onnxsim",
        "check",
        "write",
    }


def test_existing_output_gives_one_line_and_exit_2(cli, tmp_path: Path) -> None:
    output = tmp_path / "m.onnx"
    output.write_text("keep me")
    result = cli("export", "--arch", "resnet18", "-o", output)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: {output}: already exists (pass --force to overwrite it)"
    ]
    assert output.read_text() == "keep me"


def test_bad_batch_is_rejected_at_parse_time(cli) -> None:
    result = cli("export", "--batch", "0")
    assert result.exit_code == 2
    assert "'--batch': expected 'dynamic' or a whole number from 1 to" in result.output


def test_ctrl_c_exits_130_without_traceback(cli, tmp_path: Path, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_module, "to_onnx", interrupted)
    result = cli("export", "--arch", "resnet18", "-o", tmp_path / "m.onnx")
    assert result.exit_code == 130
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []
