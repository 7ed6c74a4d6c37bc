"""How busy the machine was while we timed: CPU time other processes took, per timed phase.

A timing on a shared machine is only as good as the cores it had. The kernel counts busy time
of every CPU (psutil reads it on each OS); our own process's time is in os.times(). What is left
is other processes' work, stated in cores (1.0 = one core busy throughout the phase). Eager
PyTorch's OpenMP threads collapse under such load far more than ONNX Runtime's, so a ratio of the
two measured while others ran says little: above ``BUSY_SHARE`` of the cores it is flagged.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import psutil

BUSY_SHARE = 0.10  # other processes' CPU time above this share of all cores: unreliable
# The CPU times that count as busy, where the platform has them (psutil names them per OS).
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal", "interrupt", "dpc")


@dataclass
class Contention:
    """Other processes' CPU use during one timed phase."""

    wall_s: float = 0.0
    other_cpu_s: float | None = None  # None: not measured
    cores: int = 1
    other_cores: float | None = field(init=False)  # their average load, in cores
    unreliable: bool = field(init=False)  # other_cores over BUSY_SHARE of the cores

    def __post_init__(self) -> None:
        known = self.other_cpu_s is not None and self.wall_s > 0
        self.other_cores = max(self.other_cpu_s, 0.0) / self.wall_s if known else None
        self.unreliable = (
            self.other_cores is not None and self.other_cores > BUSY_SHARE * self.cores
        )

    def message(self) -> str:
        return (
            f"UNRELIABLE: other processes used {self.other_cores:.2f} of {self.cores} cores "
            f"while timing (over {BUSY_SHARE:.0%}); times and ratios are not this machine's"
        )

    def describe(self) -> str:
        load = self.other_cores
        if load is None:
            return "other processes' CPU use: unknown (not measured)"
        return f"other processes' CPU use while timing: {load:.2f} of {self.cores} cores"

    def merge(self, other: Contention) -> Contention:
        """Two phases as one: their time and other processes' CPU time added."""
        if self.other_cpu_s is None or other.other_cpu_s is None:
            return Contention(self.wall_s + other.wall_s, None, self.cores)
        return Contention(
            self.wall_s + other.wall_s, self.other_cpu_s + other.other_cpu_s, self.cores
        )


def busy_cpu_s() -> float:
    """Seconds all CPUs spent busy since boot (user, nice, system, irq, softirq, steal)."""
    times = psutil.cpu_times()
    return sum(getattr(times, name, 0.0) for name in _BUSY_FIELDS)


def own_cpu_s() -> float:
    """This process's CPU seconds, every thread, children included."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class CpuMonitor:
    """``with CpuMonitor() as m: ...`` then ``m.result``: other processes' CPU time meanwhile."""

    def __init__(self) -> None:
        self.result = Contention(cores=os.cpu_count() or 1)

    def __enter__(self) -> CpuMonitor:
        self._busy = busy_cpu_s()
        self._own = own_cpu_s()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._start
        other = (busy_cpu_s() - self._busy) - (own_cpu_s() - self._own)
        self.result = Contention(wall, other, os.cpu_count() or 1)
