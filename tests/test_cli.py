from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import resnet_deploy.convert.export as export_module
from resnet_deploy import __version__
from resnet_deploy.cli import main
from resnet_deploy.cli.output import StatusLine, reporting

CLEAR = "\r\033[K"  # back to the line's start, and erase it


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


def test_triton_model_warmup_is_its_own_flag(cli, r18: Path, tmp_path: Path) -> None:
    """``--warmup`` is a count wherever it appears; Triton's load-time warm-up is a flag."""
    repo = tmp_path / "repo"
    assert cli("triton", r18, "--repo", repo, "--name", "warm").exit_code == 0
    assert "model_warmup" in (repo / "warm" / "config.pbtxt").read_text()
    result = cli("triton", r18, "--repo", repo, "--name", "cold", "--no-model-warmup")
    assert result.exit_code == 0, result.output
    assert "model_warmup" not in (repo / "cold" / "config.pbtxt").read_text()
    result = cli("triton", r18, "--repo", repo, "--name", "old", "--no-warmup")
    assert result.exit_code == 2 and "No such option '--no-warmup'" in result.output
    assert not (repo / "old").exists()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_status_line_only_on_a_terminal_and_never_beside_json_on_stdout(monkeypatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with reporting("-") as progress:
        progress("plain")
    assert terminal.getvalue() == "... plain\n"
    terminal.truncate(0)
    terminal.seek(0)
    with reporting(None) as progress:
        progress("export")
        time.sleep(3 * StatusLine.TICK_S)
    shown = terminal.getvalue()
    assert shown.startswith(f"{CLEAR}... export\n")
    assert shown.count("s  export") >= 2  # drawn, then redrawn as the seconds run
    assert shown.endswith(CLEAR)  # nothing of it left before the result is printed


def test_a_counted_step_is_one_line_in_a_log_and_a_bar_on_a_terminal(monkeypatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with reporting(None) as progress:
        for done in range(4):
            progress("calibrating", done, 3)
    assert log.getvalue() == "... calibrating (3 in all)\n"
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with reporting(None) as progress:
        progress("calibrating", 0, 4)
        progress("calibrating", 2, 4)
    shown = terminal.getvalue()
    assert shown.count("... calibrating") == 1  # announced once, then only redrawn
    assert "[" + "#" * 12 + "-" * 12 + "] 2/4" in shown
    assert shown.endswith(CLEAR)
