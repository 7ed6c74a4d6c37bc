"""bench --compare openvino, and ratios flagged when other processes load the machine."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from resnet_deploy.cli import main
from resnet_deploy.errors import InputError
from resnet_deploy.perf.bench import BenchOptions, bench, summary
from resnet_deploy.perf.contention import BUSY_SHARE, Contention, CpuMonitor

QUICK = {"batch_sizes": (1,), "warmup_runs": 1, "iterations": 3}
SPIN_S = 60  # the background load's own limit, should the test die before stopping it


def spinner() -> subprocess.Popen:
    """One busy core for at most SPIN_S seconds."""
    code = f"import time\nend = time.time() + {SPIN_S}\nwhile time.time() < end: pass"
    return subprocess.Popen([sys.executable, "-c", code])


def stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait(timeout=10)


def test_contention_share_of_the_cores():
    quiet = Contention(wall_s=2.0, other_cpu_s=0.1, cores=2)
    assert quiet.other_cores == pytest.approx(0.05) and not quiet.unreliable
    busy = Contention(wall_s=2.0, other_cpu_s=1.0, cores=2)
    assert busy.other_cores == pytest.approx(0.5) and busy.unreliable
    assert "UNRELIABLE" in busy.message()
    assert Contention(wall_s=1.0, other_cpu_s=None).other_cores is None


def test_monitor_sees_a_background_load():
    process = spinner()
    try:
        time.sleep(0.2)
        with CpuMonitor() as monitor:
            time.sleep(1.0)  # we idle; the spinner does not
    finally:
        stop(process)
    result = monitor.result
    assert result.wall_s >= 1.0
    assert result.other_cores > BUSY_SHARE * result.cores and result.unreliable


def test_bench_flags_ratios_under_a_busy_core(exported):
    model = exported("resnet18").output
    process = spinner()
    try:
        report = bench(model, BenchOptions(**QUICK))
    finally:
        stop(process)
    (batch,) = report.batches
    assert batch.other_cores > 0 and batch.torch_other_cores > 0
    assert not batch.ratios_reliable and batch.speedup_vs_torch is not None
    assert any(w.startswith("UNRELIABLE") for w in batch.warnings)
    text = summary(report)
    assert "x*" in text and "UNRELIABLE" in text


def test_bench_compare_openvino(exported, tmp_path):
    pytest.importorskip("openvino")
    model = exported("resnet18").output
    out = tmp_path / "b.json"
    args = ["bench", str(model), "--batch-sizes", "1", "--warmup", "1", "--iterations", "3"]
    args += ["--baseline", "none", "--compare", "openvino", "--json", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (batch,) = json.loads(out.read_text())["batches"]
    assert batch["openvino_runs"] == 3 and batch["openvino_p50_ms"] > 0
    assert batch["speedup_vs_openvino"] == pytest.approx(
        batch["images_per_s"] / batch["openvino_images_per_s"]
    )
    assert "ort/openvino" in result.output and "OpenVINO" in result.output


def test_compare_openvino_not_installed(exported, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` meets without it
    model = exported("resnet18").output
    result = CliRunner().invoke(main, ["bench", str(model), "--compare", "openvino"])
    assert result.exit_code == 2 and "OpenVINO is not installed: pip install" in result.output


def test_compare_openvino_needs_the_cpu(exported):
    with pytest.raises(InputError, match="--provider cpu"):
        bench(exported("resnet18").output, BenchOptions(provider="cuda", compare="openvino"))
