"""The machine a result was measured on, recorded beside every number."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import metadata

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


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    """Distinct (package, core) pairs: hyper-threads share a core's compute units."""
    cores = set()
    try:
        with open("/proc/cpuinfo") as f:
            package = core = None
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "physical id":
                    package = value.strip()
                elif key.strip() == "core id":
                    core = value.strip()
                    cores.add((package, core))
    except OSError:
        pass
    return len(cores) or os.cpu_count() or 1


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
