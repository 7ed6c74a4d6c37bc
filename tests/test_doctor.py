from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from onnxruntime.capi import build_and_package_info
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from resnet_deploy.cli import main
from resnet_deploy.doctor import (
    DoctorReport,
    cuda_libraries,
    diagnose,
    find_library,
    tensorrt_libraries,
    try_provider,
)

CUDA_BUILD = getattr(build_and_package_info, "cuda_version", "")


@pytest.fixture(scope="module")
def report() -> DoctorReport:
    return diagnose()


def test_cpu_provider_is_tried_and_works(report: DoctorReport) -> None:
    cpu = next(p for p in report.providers if p.provider == "CPUExecutionProvider")
    assert cpu.works
    assert "output correct" in cpu.detail


@pytest.mark.skipif(not CUDA_BUILD, reason="a CPU build of onnxruntime has no CUDA provider")
@pytest.mark.no_gpu
def test_without_gpu_cuda_fails_naming_the_missing_library(report: DoctorReport) -> None:
    cuda = next(p for p in report.providers if p.provider == "CUDAExecutionProvider")
    assert not cuda.works
    missing = re.search(r"(lib\w+\.so\.\d+): cannot open shared object file", cuda.detail)
    assert missing, cuda.detail
    assert not report.cuda_works
    assert any(p.startswith("CUDAExecutionProvider fails") for p in report.problems)
    assert not find_library(missing[1]).found


@pytest.mark.skipif(not CUDA_BUILD, reason="a CPU build of onnxruntime needs no CUDA library")
def test_library_list_follows_the_build_cuda_version(report: DoctorReport) -> None:
    major = CUDA_BUILD.split(".")[0]
    names = [lib.soname for lib in report.libraries if lib.needed_by == "CUDAExecutionProvider"]
    assert names == [name for name, _ in cuda_libraries()]
    assert {f"libcudart.so.{major}", f"libcublas.so.{major}", "libcudnn.so.9"} <= set(names)
    for lib in report.libraries:
        if lib.found:
            assert Path(lib.path).exists(), lib
        else:
            assert lib.soname in lib.error, lib


def test_find_library_reports_the_file_or_the_loader_error() -> None:
    libc = find_library("libc.so.6")
    assert libc.found and Path(libc.path).name.startswith("libc.so")
    assert Path(libc.path).exists()
    missing = find_library("libresnet_deploy_absent.so.1")
    assert not missing.found and "libresnet_deploy_absent.so.1" in missing.error


def test_provider_outside_the_build_fails_with_the_reason() -> None:
    check = try_provider("CoreMLExecutionProvider")
    assert not check.works
    assert "not part of this onnxruntime build" in check.detail


def test_cli_json_is_one_record_and_exit_0() -> None:
    result = CliRunner().invoke(main, ["doctor", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    record = json.loads(result.stdout)  # nothing ONNX Runtime printed got mixed in
    assert {"providers", "libraries", "gpus", "packages", "cuda_works", "problems"} <= set(record)
    assert {"torch", "onnx", "numpy", "click"} <= set(record["packages"])


def test_cli_table_says_what_works() -> None:
    result = CliRunner().invoke(main, ["doctor"], catch_exceptions=False)
    assert result.exit_code == 0
    assert re.search(r"CPUExecutionProvider\s+yes", result.output)
    assert ("CUDA works" in result.output) or ("CUDA does NOT work" in result.output)


@pytest.mark.skipif(not CUDA_BUILD, reason="a CPU build of onnxruntime has no TensorRT provider")
def test_tensorrt_libraries_are_looked_up(report: DoctorReport) -> None:
    wanted = tensorrt_libraries()  # what this build's TensorRT provider links
    assert any(re.fullmatch(r"libnvinfer\.so\.\d+", name) for name in wanted)
    trt = [lib for lib in report.libraries if lib.needed_by == "TensorrtExecutionProvider"]
    assert [lib.soname for lib in trt] == wanted
    for lib in trt:
        if not lib.found:
            assert f"{lib.soname} not found (TensorrtExecutionProvider cannot start)" in (
                report.problems
            )


def test_a_first_run_failure_is_reported_not_raised(monkeypatch) -> None:
    """As a GPU without kernels for its architecture fails: the session starts, the run not."""

    def no_kernel(*args: object) -> None:
        raise ort_state.RuntimeException("CUDA failure 209: no kernel image is available")

    monkeypatch.setattr(ort_state.InferenceSession, "run", no_kernel)
    check = try_provider("CPUExecutionProvider")
    assert not check.works
    assert (
        check.detail
        == "started, but its first run failed: CUDA failure 209: no kernel image is available"
    )
    assert check.placement.nodes == {"CPUExecutionProvider": 1}
