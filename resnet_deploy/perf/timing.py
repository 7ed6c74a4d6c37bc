"""The timing loop every measurement here shares: bench, remote bench, LoadGen's calibration
and tune's candidates.

Measured the way trtexec and onnxruntime_perf_test measure: a warm-up apart from the timed
loop, every run timed on its own, latency as percentiles and throughput as images over the
loop's wall time. A runner is anything with ``place(array)`` (the feed, on its device) and
``infer(feed)`` (synchronized before it returns).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from resnet_deploy.perf.contention import Contention, CpuMonitor

DEFAULT_WARMUP_S = 2.0
DEFAULT_DURATION_S = 5.0
CV_WARNING = 0.10  # run-to-run spread above which a result is flagged unstable
PERCENTILE_MIN_RUNS = {"p90": 10, "p95": 20, "p99": 100}  # fewer runs: it is just the maximum


class Runner(Protocol):
    def place(self, array: np.ndarray) -> Any: ...

    def infer(self, feed: Any) -> Any: ...


def loop_bounds(
    runs: int | None, seconds: float | None, default_s: float, *, limit_s: float | None = None
) -> dict[str, Any]:
    """Exactly ``runs`` runs or ``seconds`` (``default_s`` when neither is given), and with
    ``limit_s`` never longer than that either way."""
    if runs is None and seconds is None:
        seconds = default_s
    if limit_s is not None:
        seconds = min(seconds or limit_s, limit_s)
    return {"runs": runs, "seconds": seconds}


def time_runs(
    infer: Callable[[Any], Any], feed: Any, *, runs: int | None = None, seconds: float | None = None
) -> tuple[list[float], float]:
    """Each run's seconds and the loop's wall time: ``runs`` runs, or runs for ``seconds``."""
    times: list[float] = []
    start = time.perf_counter()
    while (runs is not None and len(times) < runs) or (
        seconds is not None and time.perf_counter() - start < seconds
    ):
        begin = time.perf_counter()
        infer(feed)
        times.append(time.perf_counter() - begin)
    return times, time.perf_counter() - start


def measure(
    runner: Runner, array: np.ndarray, warmup: dict[str, Any], timed: dict[str, Any]
) -> tuple[float, dict, list[float]]:
    """First inference in ms, then the ``warmup`` loop, then the ``timed`` loop's statistics
    (other processes' CPU use meanwhile included) and each run's ms; the loops as
    ``loop_bounds`` gives them."""
    feed = runner.place(array)
    start = time.perf_counter()
    runner.infer(feed)
    first_ms = (time.perf_counter() - start) * 1e3
    time_runs(runner.infer, feed, **warmup)
    with CpuMonitor() as monitor:
        times, wall = time_runs(runner.infer, feed, **timed)
    stats = summarize(times, wall, len(array))
    stats["other_cores"] = monitor.result.other_cores
    return first_ms, stats, [t * 1e3 for t in times]


def time_parallel(
    runners: list[Runner], array: np.ndarray, *, seconds: float, warmup_s: float = 0.0
) -> tuple[list[float], float, Contention]:
    """Each runner in its own thread, as a server runs its instances: one run and ``warmup_s``
    of warm-up apiece, then all of them at once for ``seconds``. Every timed run's seconds, the
    wall time, and other processes' CPU use meanwhile; the first error any thread hit raises."""
    start = threading.Barrier(len(runners) + 1)
    times: list[list[float]] = [[] for _ in runners]
    errors: list[BaseException] = []

    def serve(index: int) -> None:
        runner = runners[index]
        try:
            feed = runner.place(array)
            until = time.perf_counter() + warmup_s
            runner.infer(feed)
            while time.perf_counter() < until:
                runner.infer(feed)
        except BaseException as exc:  # raised once every thread has stopped
            errors.append(exc)
        start.wait()
        end = time.perf_counter() + seconds
        try:
            while not errors and time.perf_counter() < end:
                begin = time.perf_counter()
                runner.infer(feed)
                times[index].append(time.perf_counter() - begin)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=serve, args=(i,), daemon=True) for i in range(len(runners))]
    for worker in workers:
        worker.start()
    start.wait()
    with CpuMonitor() as monitor:
        began = time.perf_counter()
        for worker in workers:
            worker.join()
        wall = time.perf_counter() - began
    if errors:
        raise errors[0]
    return [t for per in times for t in per], wall, monitor.result


def summarize(times_s: list[float], wall_s: float, batch: int) -> dict[str, float]:
    """Latency percentiles in ms and throughput in images/s, raw floats."""
    ms = np.asarray(times_s) * 1e3
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
    mean = float(ms.mean())
    return {
        "runs": len(ms),
        "min_ms": float(ms.min()),
        "mean_ms": mean,
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p95_ms": float(p95),
        "p99_ms": float(p99),
        "max_ms": float(ms.max()),
        "cv": float(ms.std(ddof=1) / mean) if len(ms) > 1 else 0.0,
        "images_per_s": batch * len(ms) / wall_s,
    }


def too_few_runs(runs: int, unit: str = "timed runs") -> list[str]:
    """A warning for each percentile too few runs cannot tell from the maximum."""
    short = [p for p, n in PERCENTILE_MIN_RUNS.items() if runs < n]
    if not short:
        return []
    needed = ", ".join(f"{p} needs {PERCENTILE_MIN_RUNS[p]}" for p in short)
    return [f"only {runs} {unit}: {needed} to be more than the maximum"]
