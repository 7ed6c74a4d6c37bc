"""What really works on this machine: each provider tried, CUDA libraries looked up, versions,
and `serve` started on a tiny model and proven by its canary.

Listing ``get_available_providers()`` proves nothing: the GPU package lists CUDA and TensorRT on
every machine. Each provider is given a one-node model through ``providers.create_session``
(which refuses ONNX Runtime's silent CPU fallback) and run once. The CUDA and cuDNN libraries
this onnxruntime build loads, and TensorRT's (``libnvinfer``), are opened by soname, as its own
loader will open them. A provider that starts but fails on its first run is reported, not a
crash.

Every resnet-deploy command imports torch before onnxruntime, and a CUDA build of torch loads
its own CUDA libraries; those then count as found here, as they do for the other commands.
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from onnxruntime.capi import build_and_package_info

from resnet_deploy.environment import gpus, package_versions
from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.report.records import format_table
from resnet_deploy.runtime.names import TENSORRT
from resnet_deploy.runtime.placement import Placement
from resnet_deploy.runtime.providers import SessionConfig, create_session

DRIVER_LIBRARY = "libcuda.so.1"  # the CUDA provider links it; it comes with the NVIDIA driver
PROBE_INPUT = np.array([-1.0, 2.0], dtype=np.float32)
PROBE_EXPECTED = np.array([0.0, 2.0], dtype=np.float32)


@dataclass(frozen=True)
class ProviderCheck:
    provider: str
    works: bool
    detail: str  # what ran, or ONNX Runtime's reason it did not
    placement: Placement | None = None  # where the probe's node ran, once the session started


@dataclass(frozen=True)
class LibraryCheck:
    soname: str
    found: bool
    path: str  # the file the loader opened; "" when missing or unknown
    error: str  # the loader's message when missing
    optional: bool  # ONNX Runtime loads it for a few ops only (cuFFT, NVRTC)
    needed_by: str = "CUDAExecutionProvider"  # or TensorrtExecutionProvider


@dataclass(frozen=True)
class ServeCheck:
    works: bool
    detail: str  # the canary's verdict, or why serve could not start
    startup_s: float = 0.0  # until the canary agreed


@dataclass
class DoctorReport:
    onnxruntime: str  # package and version, e.g. "onnxruntime-gpu 1.31.1"
    onnxruntime_cuda: str  # the CUDA version the build was made for; "" for a CPU build
    providers: list[ProviderCheck]
    libraries: list[LibraryCheck]
    gpus: tuple[str, ...]
    torch_cuda_available: bool
    torch_cuda: str  # the CUDA version torch was built for; "" for a CPU build
    packages: dict[str, str]
    cuda_works: bool
    serve: ServeCheck
    problems: list[str] = field(default_factory=list)  # one line per thing that does not work


def diagnose() -> DoctorReport:
    """Try every provider, look up every library, and say plainly what does not work."""
    import torch  # first, as in every command (see the module's docstring)

    providers = [try_provider(name) for name in ort.get_available_providers()]
    libraries = [find_library(name, optional) for name, optional in cuda_libraries()]
    libraries += [find_library(name, needed_by=TENSORRT) for name in tensorrt_libraries()]
    found_gpus = gpus()
    problems = [f"{p.provider} fails: {p.detail}" for p in providers if not p.works]
    problems += [
        f"{lib.soname} not found ({lib.needed_by} cannot start)"
        for lib in libraries
        if not lib.found and not lib.optional
    ]
    if not found_gpus:
        problems.append("no NVIDIA GPU visible (nvidia-smi is missing or lists none)")
    if not torch.cuda.is_available():
        reason = "a CPU build" if torch.version.cuda is None else "no usable GPU"
        problems.append(f"torch {torch.__version__} cannot use CUDA ({reason})")
    serve = check_serve()
    if not serve.works:
        problems.append(f"serve does not work: {serve.detail}")
    return DoctorReport(
        onnxruntime=f"{build_and_package_info.package_name} {ort.__version__}",
        onnxruntime_cuda=getattr(build_and_package_info, "cuda_version", ""),
        providers=providers,
        libraries=libraries,
        gpus=found_gpus,
        torch_cuda_available=torch.cuda.is_available(),
        torch_cuda=torch.version.cuda or "",
        packages=package_versions(),
        cuda_works=any(p.works and p.provider == "CUDAExecutionProvider" for p in providers),
        serve=serve,
        problems=problems,
    )


def probe_model(rows: int | str = 2) -> bytes:
    """One Relu, IR 8 and opset 13: old enough for every onnxruntime and TensorRT we support.

    ``rows`` is its shape: 2 values for the providers, or a named dimension, which Triton
    batches, for serve's check.
    """
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows] if rows == 2 else [rows, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows] if rows == 2 else [rows, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def try_provider(provider: str) -> ProviderCheck:
    """Create a session on exactly ``provider`` and check one run's output."""
    try:
        session = create_session(probe_model(), SessionConfig(provider=provider))
    except ResnetDeployError as exc:
        return ProviderCheck(provider, False, str(exc))
    try:
        (output,) = session.run(None, {"x": PROBE_INPUT})
    except Exception as exc:  # a GPU error on the first run (a kernel image, memory) is a finding
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return ProviderCheck(
            provider, False, f"started, but its first run failed: {reason}", session.placement
        )
    if not np.array_equal(output, PROBE_EXPECTED):
        detail = f"ran, but Relu{PROBE_INPUT} gave {output}"
        return ProviderCheck(provider, False, detail, session.placement)
    return ProviderCheck(provider, True, "ran a one-node model, output correct", session.placement)


def check_serve() -> ServeCheck:
    """`serve` on a one-Relu model over loopback, ready only once its canary agreed, then stopped.

    The same start users get: Triton's Python-backend stubs, this interpreter's packages, the
    answers over HTTP and gRPC compared with in-process ONNX Runtime.
    """
    if importlib.util.find_spec("pytriton") is None:
        return ServeCheck(False, "not installed: pip install 'resnet-deploy[serve]'")
    from resnet_deploy.serving.process import free_loopback_ports
    from resnet_deploy.serving.server import ModelServer, ServeOptions

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-doctor-") as folder:
        model = Path(folder) / "doctor-probe.onnx"
        model.write_bytes(probe_model(rows="batch"))
        http, grpc, metrics = free_loopback_ports(3)
        options = ServeOptions(http_port=http, grpc_port=grpc, metrics_port=metrics)
        try:
            with ModelServer(model, options) as server:
                canary = server.canary
        except ResnetDeployError as exc:
            return ServeCheck(False, str(exc))
    assert canary is not None  # a started server has run its canary
    return ServeCheck(True, canary.summary(), time.perf_counter() - started)


def cuda_libraries() -> list[tuple[str, bool]]:
    """``(soname, optional)`` for the CUDA and cuDNN libraries this onnxruntime build loads.

    The sonames come from onnxruntime's own table (``_get_nvidia_dll_paths``, what its
    ``preload_dlls`` loads), made from the CUDA version the build records; it is private, so a
    build without it, or a CPU build, gives only the driver library.
    """
    if not sys.platform.startswith("linux"):
        return []
    table = getattr(ort, "_get_nvidia_dll_paths", None)
    names: list[str] = []
    if table is not None and getattr(build_and_package_info, "cuda_version", ""):
        try:
            names = [path[-1] for path in table(False, cuda=True, cudnn=True)]
        except (TypeError, ValueError):
            names = []
    return [(DRIVER_LIBRARY, False)] + [(n, "cufft" in n or "nvrtc" in n) for n in names]


def tensorrt_libraries() -> list[str]:
    """The TensorRT sonames (``libnvinfer.so.10``, its ONNX parser) that this onnxruntime
    build's TensorRT provider links, read from the provider library itself; none without it."""
    provider_library = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_tensorrt.so"
    try:
        data = provider_library.read_bytes()
    except OSError:
        return []
    names = re.findall(rb"lib(?:nvinfer|nvonnxparser)\.so\.\d+", data)
    return sorted({name.decode() for name in names})


def find_library(
    soname: str, optional: bool = False, needed_by: str = "CUDAExecutionProvider"
) -> LibraryCheck:
    """Open ``soname`` as the dynamic loader would for ONNX Runtime, and say which file it was."""
    try:
        ctypes.CDLL(soname)
    except OSError as exc:
        return LibraryCheck(soname, False, "", str(exc), optional, needed_by)
    return LibraryCheck(soname, True, _loaded_path(soname), "", optional, needed_by)


def _loaded_path(soname: str) -> str:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return ""
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and Path(fields[5]).name.startswith(soname):
            return fields[5]
    return ""


def format_report(report: DoctorReport) -> str:
    """The report for people: providers, libraries, GPUs, versions, then what fails."""
    lines = []
    lines.append(f"{report.onnxruntime}, built for CUDA {report.onnxruntime_cuda or '(none)'}")
    lines.append("")
    rows = [
        [p.provider, "yes" if p.works else "NO", _placed(p.placement), p.detail]
        for p in report.providers
    ]
    lines.append(format_table(["provider", "works", "probe ran on", "detail"], rows))
    lines.append("")
    rows = [
        [
            lib.soname,
            "yes" if lib.found else "NO",
            {TENSORRT: "TensorRT"}.get(lib.needed_by, "CUDA"),
            lib.path or lib.error,
            "optional" * lib.optional,
        ]
        for lib in report.libraries
    ]
    lines.append(format_table(["library", "found", "for", "path or error", ""], rows))
    lines.append("")
    lines.append(f"GPUs: {'; '.join(report.gpus) or 'none visible to nvidia-smi'}")
    torch_cuda = report.torch_cuda or "none (CPU build)"
    lines.append(f"torch CUDA: {torch_cuda}, available: {report.torch_cuda_available}")
    lines.append("")
    lines.append(format_table(["package", "version"], list(report.packages.items())))
    lines.append("")
    serve = report.serve
    verdict = f"works in {serve.startup_s:.1f} s" if serve.works else "does NOT work"
    lines.append(f"serve: {verdict}: {serve.detail}")
    lines.append("")
    if report.cuda_works:
        lines.append("CUDA works: CUDAExecutionProvider ran the probe model.")
    else:
        lines.append("CUDA does NOT work here:")
    for problem in report.problems:
        lines.append(f"  - {problem}")
    return "\n".join(lines)


def _placed(placement: Placement | None) -> str:
    if placement is None:
        return "-"
    return ", ".join(f"{name} {n}" for name, n in placement.nodes.items()) or "-"
