"""The machine a result was measured on, recorded beside every number."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import psutil

CPUINFO = Path("/proc/cpuinfo")
PACKAGES = ("torch", "onnx", "onnxruntime", "onnxruntime-gpu", "onnxsim", "numpy", "click")


@dataclass(frozen=True)
class Environment:
    cpu_model: str
    physical_cores: int
    logical_cpus: int
    gpus: tuple[str, ...]  # "NVIDIA H200, driver 580.xx" for each GPU nvidia-smi lists
    platform: str
    python: str
    packages: dict[str, str] = field(default_factory=dict)  # installed versions only


@dataclass(frozen=True)
class CpuInfo:
    """What Linux's /proc/cpuinfo says about the CPU; None where it does not say (other OS, ARM)."""

    model: str | None = None  # the first "model name" line
    flags: frozenset[str] | None = None  # the x86 "flags" line: the instruction set extensions


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first CPU's model name and flags (every CPU of a machine lists the same)."""
    model: str | None = None
    flags: frozenset[str] | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
    return CpuInfo(model=model, flags=flags)


@cache
def cpuinfo() -> CpuInfo:
    """This machine's /proc/cpuinfo, read once per process: it does not change while we run."""
    try:
        return parse_cpuinfo(CPUINFO.read_text())
    except OSError:
        return CpuInfo()


def cpu_flags(text: str | None = None) -> frozenset[str] | None:
    """The CPU feature flags Linux lists, or None where it lists none (another OS, an ARM CPU).

    ``text`` is a /proc/cpuinfo text to read instead of this machine's (tests describe others).
    """
    return (cpuinfo() if text is None else parse_cpuinfo(text)).flags


def cpu_model() -> str:
    return cpuinfo().model or platform.processor() or platform.machine()


def physical_cores() -> int:
    """Cores, not hyper-threads: the threads of one core share its compute units."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def gpus() -> tuple[str, ...]:
    """GPU names and driver versions from nvidia-smi; empty where there is none."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    rows = [line.split(",") for line in out.strip().splitlines() if "," in line]
    return tuple(f"{name.strip()}, driver {driver.strip()}" for name, driver in rows)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def describe_environment() -> Environment:
    return Environment(
        cpu_model=cpu_model(),
        physical_cores=physical_cores(),
        logical_cpus=os.cpu_count() or 1,
        gpus=gpus(),
        platform=platform.platform(),
        python=platform.python_version(),
        packages=package_versions(),
    )
