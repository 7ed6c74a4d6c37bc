"""`doctor`: the probes run for real where the outcome is known on any machine (the CPU
provider, libc, a provider outside the build); every other outcome is driven by replacing the
probe doctor uses, so each is asserted in its own test, whatever this machine has."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from onnxruntime.capi import build_and_package_info
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

import resnet_deploy.doctor as doctor
from resnet_deploy.doctor import (
    PROBE_INPUT,
    DoctorReport,
    LibraryCheck,
    ProviderCheck,
    ServeCheck,
    cuda_libraries,
    diagnose,
    find_library,
    format_report,
    tensorrt_libraries,
    try_provider,
)
from resnet_deploy.runtime.names import CPU, CUDA, TENSORRT
from tests.helpers import cli

CUDA_BUILD = getattr(build_and_package_info, "cuda_version", "")
WORKS = "ran a one-node model, output correct"
NO_CUBLAS = "libcublas.so.12: cannot open shared object file: No such file or directory"
SERVED = "canary agreed with in-process ONNX Runtime (...): doctor-probe over http, ... grpc"


@dataclass(frozen=True)
class Machine:
    """What doctor's probes find on an imagined machine; the default one has a working GPU."""

    failing: dict[str, str] = field(default_factory=dict)  # provider -> ONNX Runtime's reason
    missing: frozenset[str] = frozenset()  # sonames the loader cannot open
    gpus: tuple[str, ...] = ("NVIDIA H100 80GB HBM3",)
    torch_cuda: str | None = "12.8"  # the CUDA torch was built for; None for a CPU build
    torch_gpu: bool = True  # torch.cuda.is_available()
    serve_fails: str | None = None  # why serve's check failed; None: its canary agreed


# The libraries an imagined CUDA 12 build loads: the driver, one required, one optional.
CUDA_LIBRARIES = [("libcuda.so.1", False), ("libcublas.so.12", False), ("libcufft.so.11", True)]
TRT_LIBRARIES = ["libnvinfer.so.10"]


@pytest.fixture
def on(monkeypatch: pytest.MonkeyPatch) -> Callable[[Machine], None]:
    """``on(machine)``: from then on, doctor's probes report ``machine``."""

    def set_up(machine: Machine) -> None:
        def probe(provider: str) -> ProviderCheck:
            reason = machine.failing.get(provider)
            return ProviderCheck(provider, reason is None, reason or WORKS)

        def load(soname: str, optional: bool = False, needed_by: str = CUDA) -> LibraryCheck:
            if soname in machine.missing:
                error = f"{soname}: cannot open shared object file"
                return LibraryCheck(soname, False, "", error, optional, needed_by)
            return LibraryCheck(soname, True, f"/usr/lib/{soname}", "", optional, needed_by)

        monkeypatch.setattr(doctor.ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
        monkeypatch.setattr(doctor, "try_provider", probe)
        monkeypatch.setattr(doctor, "cuda_libraries", lambda: list(CUDA_LIBRARIES))
        monkeypatch.setattr(doctor, "tensorrt_libraries", lambda: list(TRT_LIBRARIES))
        monkeypatch.setattr(doctor, "find_library", load)
        monkeypatch.setattr(doctor, "gpus", lambda: machine.gpus)
        serve = ServeCheck(machine.serve_fails is None, machine.serve_fails or SERVED, 4.2)
        monkeypatch.setattr(doctor, "check_serve", lambda: serve)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: machine.torch_gpu)
        monkeypatch.setattr(torch.version, "cuda", machine.torch_cuda)

    return set_up


BROKEN = Machine(
    failing={CUDA: NO_CUBLAS},
    missing=frozenset({"libcublas.so.12"}),
    gpus=(),
    torch_cuda=None,
    torch_gpu=False,
)
BROKEN_PROBLEMS = [
    f"CUDAExecutionProvider fails: {NO_CUBLAS}",
    "libcublas.so.12 not found (CUDAExecutionProvider cannot start)",
    "no NVIDIA GPU visible (nvidia-smi is missing or lists none)",
    f"torch {torch.__version__} cannot use CUDA (a CPU build)",
]


# --- the probes themselves, on what every machine has -----------------------------------------


@pytest.fixture(scope="module")
def report() -> DoctorReport:
    return diagnose()


def test_cpu_provider_is_tried_and_works(report: DoctorReport) -> None:
    cpu = next(p for p in report.providers if p.provider == CPU)
    assert cpu.works
    assert "output correct" in cpu.detail


@pytest.mark.skipif(not CUDA_BUILD, reason="a CPU build of onnxruntime has no CUDA provider")
@pytest.mark.no_gpu
def test_without_gpu_cuda_fails_naming_the_missing_library(report: DoctorReport) -> None:
    cuda = next(p for p in report.providers if p.provider == CUDA)
    assert not cuda.works
    missing = re.search(r"(lib\w+\.so\.\d+): cannot open shared object file", cuda.detail)
    assert missing, cuda.detail
    assert not report.cuda_works
    assert any(p.startswith("CUDAExecutionProvider fails") for p in report.problems)
    assert not find_library(missing[1]).found


@pytest.mark.skipif(not CUDA_BUILD, reason="a CPU build of onnxruntime needs no CUDA library")
def test_library_list_follows_the_build_cuda_version(report: DoctorReport) -> None:
    major = CUDA_BUILD.split(".")[0]
    names = [lib.soname for lib in report.libraries if lib.needed_by == CUDA]
    assert names == [name for name, _ in cuda_libraries()]
    assert {f"libcudart.so.{major}", f"libcublas.so.{major}", "libcudnn.so.9"} <= set(names)


@pytest.mark.skipif(not CUDA_BUILD, reason="a CPU build of onnxruntime has no TensorRT provider")
def test_tensorrt_libraries_are_looked_up(report: DoctorReport) -> None:
    wanted = tensorrt_libraries()  # what this build's TensorRT provider links
    assert any(re.fullmatch(r"libnvinfer\.so\.\d+", name) for name in wanted)
    trt = [lib for lib in report.libraries if lib.needed_by == TENSORRT]
    assert [lib.soname for lib in trt] == wanted


def test_serve_is_started_and_proven_by_its_canary(report: DoctorReport) -> None:
    """The real check: serve on the probe model, ready only once HTTP and gRPC agreed."""
    assert report.serve.works, report.serve.detail
    assert report.serve.detail.startswith("canary agreed with in-process ONNX Runtime")
    assert "over http" in report.serve.detail and "over grpc" in report.serve.detail
    assert report.serve.startup_s > 0
    assert not any(problem.startswith("serve") for problem in report.problems)


def test_find_library_reports_the_file() -> None:
    libc = find_library("libc.so.6")
    assert libc.found and Path(libc.path).name.startswith("libc.so")
    assert Path(libc.path).exists() and libc.error == ""


def test_find_library_reports_the_loader_error() -> None:
    missing = find_library("libresnet_deploy_absent.so.1", optional=True, needed_by=TENSORRT)
    assert not missing.found and missing.path == ""
    assert "libresnet_deploy_absent.so.1" in missing.error
    assert missing.optional and missing.needed_by == TENSORRT


def test_provider_outside_the_build_fails_with_the_reason() -> None:
    check = try_provider("CoreMLExecutionProvider")
    assert not check.works
    assert "not part of this onnxruntime build" in check.detail


def test_a_first_run_failure_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a GPU without kernels for its architecture fails: the session starts, the run not."""

    def no_kernel(*args: object) -> None:
        raise ort_state.RuntimeException("CUDA failure 209: no kernel image is available")

    monkeypatch.setattr(ort_state.InferenceSession, "run", no_kernel)
    check = try_provider(CPU)
    assert not check.works
    assert (
        check.detail
        == "started, but its first run failed: CUDA failure 209: no kernel image is available"
    )
    assert check.placement.nodes == {CPU: 1}


def test_a_wrong_probe_output_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider that runs but computes garbage (a broken kernel) does not count as working."""
    wrong = np.array([-1.0, 2.0], dtype=np.float32)  # Relu left the negative value
    monkeypatch.setattr(ort_state.InferenceSession, "run", lambda *args: [wrong])
    check = try_provider(CPU)
    assert not check.works
    assert check.detail == f"ran, but Relu{PROBE_INPUT} gave {wrong}"


# --- each outcome of diagnose, on an imagined machine ----------------------------------------


def test_a_working_gpu_machine_has_no_problems(on: Callable[[Machine], None]) -> None:
    on(Machine())
    report = diagnose()
    assert report.cuda_works and report.torch_cuda_available
    assert report.problems == []
    assert [p.provider for p in report.providers] == [TENSORRT, CUDA, CPU]
    assert [lib.soname for lib in report.libraries] == [
        *(name for name, _ in CUDA_LIBRARIES),
        *TRT_LIBRARIES,
    ]
    assert report.gpus == Machine().gpus and report.torch_cuda == "12.8"


def test_a_broken_machine_lists_each_problem(on: Callable[[Machine], None]) -> None:
    on(BROKEN)
    report = diagnose()
    assert not report.cuda_works and not report.torch_cuda_available
    assert report.problems == BROKEN_PROBLEMS
    assert report.torch_cuda == ""


def test_only_the_cuda_provider_decides_whether_cuda_works(
    on: Callable[[Machine], None],
) -> None:
    on(Machine(failing={TENSORRT: "libnvinfer.so.10: cannot open shared object file"}))
    report = diagnose()
    assert report.cuda_works
    assert report.problems == [
        "TensorrtExecutionProvider fails: libnvinfer.so.10: cannot open shared object file"
    ]


def test_a_missing_optional_library_is_no_problem(on: Callable[[Machine], None]) -> None:
    on(Machine(missing=frozenset({"libcufft.so.11"})))
    report = diagnose()
    (cufft,) = [lib for lib in report.libraries if lib.soname == "libcufft.so.11"]
    assert not cufft.found and cufft.optional
    assert report.problems == []


def test_a_missing_tensorrt_library_names_its_provider(on: Callable[[Machine], None]) -> None:
    on(Machine(missing=frozenset(TRT_LIBRARIES)))
    assert diagnose().problems == [
        "libnvinfer.so.10 not found (TensorrtExecutionProvider cannot start)"
    ]


@pytest.mark.parametrize(
    ("torch_cuda", "reason"), [(None, "a CPU build"), ("12.8", "no usable GPU")]
)
def test_torch_without_cuda_says_why(
    on: Callable[[Machine], None], torch_cuda: str | None, reason: str
) -> None:
    on(Machine(torch_cuda=torch_cuda, torch_gpu=False))
    report = diagnose()
    assert report.cuda_works and not report.torch_cuda_available
    assert report.problems == [f"torch {torch.__version__} cannot use CUDA ({reason})"]


def test_a_serve_that_fails_its_check_is_a_problem(on: Callable[[Machine], None]) -> None:
    why = "the served model answers differently from in-process ONNX Runtime, so serve stopped it"
    on(Machine(serve_fails=why))
    report = diagnose()
    assert report.cuda_works and not report.serve.works
    assert report.problems == [f"serve does not work: {why}"]
    assert f"serve: does NOT work: {why}" in format_report(report)


# --- what people and scripts read ------------------------------------------------------------


def test_report_for_a_working_machine_says_cuda_works(on: Callable[[Machine], None]) -> None:
    on(Machine())
    text = format_report(diagnose())
    assert re.search(r"CUDAExecutionProvider\s+yes", text)
    assert "GPUs: NVIDIA H100 80GB HBM3" in text
    assert text.endswith("CUDA works: CUDAExecutionProvider ran the probe model.")
    assert "does NOT" not in text


def test_report_for_a_broken_machine_lists_the_problems(on: Callable[[Machine], None]) -> None:
    on(BROKEN)
    text = format_report(diagnose())
    assert re.search(r"CUDAExecutionProvider\s+NO", text)
    assert re.search(r"libcublas\.so\.12\s+NO\s+CUDA\s+libcublas\.so\.12: cannot open", text)
    assert "GPUs: none visible to nvidia-smi" in text
    tail = text.split("CUDA does NOT work here:\n", 1)[1]
    assert tail.splitlines() == [f"  - {problem}" for problem in BROKEN_PROBLEMS]
    assert "CUDA works:" not in text


def test_cli_table_says_what_works(on: Callable[[Machine], None]) -> None:
    on(Machine())
    result = cli("doctor")
    assert result.exit_code == 0
    assert re.search(r"CPUExecutionProvider\s+yes", result.output)
    assert "CUDA works: CUDAExecutionProvider ran the probe model." in result.output


def test_cli_exits_0_on_a_broken_machine_and_names_the_problems(
    on: Callable[[Machine], None],
) -> None:
    on(BROKEN)
    result = cli("doctor")
    assert result.exit_code == 0  # a report, not a check: it says what fails
    assert "CUDA does NOT work here:" in result.output
    assert all(f"  - {problem}" in result.output for problem in BROKEN_PROBLEMS)


def test_cli_json_is_one_record(on: Callable[[Machine], None]) -> None:
    on(BROKEN)
    result = cli("doctor", "--json")
    assert result.exit_code == 0
    record = json.loads(result.stdout)
    assert {"providers", "libraries", "gpus", "packages", "cuda_works", "serve", "problems"} <= set(
        record
    )
    assert record["serve"] == {"works": True, "detail": SERVED, "startup_s": 4.2}
    assert {"torch", "onnx", "numpy", "click"} <= set(record["packages"])
    assert record["cuda_works"] is False and record["problems"] == BROKEN_PROBLEMS


def test_cli_json_of_the_real_probes_is_one_record() -> None:
    """The real probes, CUDA's included, print nothing into the record on stdout."""
    result = cli("doctor", "--json")
    assert result.exit_code == 0
    record = json.loads(result.stdout)  # nothing ONNX Runtime printed got mixed in
    assert any(p["provider"] == CPU and p["works"] for p in record["providers"])
