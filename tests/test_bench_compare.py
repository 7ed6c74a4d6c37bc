"""bench --compare openvino, and ratios flagged when other processes load the machine."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest
from click.testing import CliRunner

from resnet_deploy.cli import main
from resnet_deploy.errors import InputError
from resnet_deploy.perf.bench import BenchOptions, bench
from resnet_deploy.perf.bench_output import summary
from resnet_deploy.perf.contention import (
    BUSY_SHARE,
    Contention,
    CpuMonitor,
    busy_cpu_s,
    own_cpu_s,
)

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


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def test_monitor_sees_a_background_load():
    """Accounting that holds however busy the shared machine is: a spinning child's CPU time
    (read from its own counters) shows in other processes' share; our own spinning does not.
    A monitor that always says busy, or forgets to leave out our own process, fails."""
    process = spinner()
    try:
        child = psutil.Process(process.pid)
        time.sleep(0.2)
        before = cpu_s(child)
        with CpuMonitor() as loaded:
            time.sleep(1.5)  # we idle; the spinner does not
        spun = cpu_s(child) - before
    finally:
        stop(process)
    assert loaded.result.wall_s >= 1.5 and spun > 0.1  # it ran, if only a share of a core
    assert loaded.result.other_cpu_s >= spun - 0.05  # the counters tick in 10 ms
    assert loaded.result.other_cores > BUSY_SHARE * loaded.result.cores and loaded.result.unreliable

    busy, own = busy_cpu_s(), own_cpu_s()
    with CpuMonitor() as quiet:
        end = time.perf_counter() + 1.5
        while time.perf_counter() < end:  # we spin; no child of ours does
            pass
    busy, own = busy_cpu_s() - busy, own_cpu_s() - own
    assert own > 0.1
    assert quiet.result.other_cpu_s <= busy - own + 0.05


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
    with pytest.raises(InputError, match="use the cpu provider") as raised:
        bench(exported("resnet18").output, BenchOptions(provider="cuda", compare="openvino"))
    assert raised.value.options == ("compare", "provider")
