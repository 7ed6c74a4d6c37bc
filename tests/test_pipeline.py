from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import resnet_deploy.convert.export as export_module
from resnet_deploy.cli import main
from resnet_deploy.errors import InputError
from resnet_deploy.pipeline import RunOptions, run_pipeline
from tests.helpers import tampered


@pytest.mark.slow
def test_run_exports_verifies_benches_and_keeps_every_artifact(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    args = ["run", "--arch", "resnet18", "-o", str(folder), "--batch-sizes", "1,2"]
    args += ["--duration", "0.3", "--json"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["verify"]["passed"] is True
    assert [b["batch_size"] for b in record["bench"]["batches"]] == [1, 2]
    assert all(b["error"] is None and b["speedup_vs_torch"] > 0 for b in record["bench"]["batches"])
    names = {"model.onnx", "bench.csv", "bench.png", "report.json", "report.txt", "report.html"}
    assert {p.name for p in folder.iterdir()} == names
    assert json.loads((folder / "report.json").read_text())["export"]["metadata"]["arch"] == (
        "resnet18"
    )
    assert "== verify ==" in (folder / "report.txt").read_text()


@pytest.mark.slow
def test_a_file_that_fails_verification_is_not_benched(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(export_module, "simplify", tampered(export_module.simplify))
    folder = tmp_path / "run"
    report = run_pipeline(RunOptions(folder=folder, arch="resnet18", duration_s=0.3))
    assert not report.verify.passed
    assert report.bench is None and not report.passed
    assert "skipped: verification failed" in (folder / "report.txt").read_text()
    assert not (folder / "bench.csv").exists()


def test_a_folder_with_files_is_not_replaced_without_force(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already holds files"):
        run_pipeline(RunOptions(folder=folder, arch="resnet18"))
    assert (folder / "keep.txt").read_text() == "mine"
