"""The v2 client's reading of URLs and of a model's metadata, without a server.

The metadata and config below are what Triton answers (HTTP's JSON; gRPC's as_json gives the
same keys with int64 as strings); the tests against a live server are in test_bench_remote.py.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from resnet_deploy.errors import InputError
from resnet_deploy.serving.client import EndpointOptions, _describe, parse_url

SERVER = {"name": "triton", "version": "2.51.0"}


def metadata(shape: list, datatype: str = "FP32") -> dict:
    return {
        "name": "resnet50",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "input", "datatype": datatype, "shape": shape}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}],
    }


def describe(shape: list, max_batch_size: int, datatype: str = "FP32"):
    options = EndpointOptions("grpc://127.0.0.1:8001")
    config = {"max_batch_size": max_batch_size}
    return _describe(options, "grpc", "127.0.0.1:8001", SERVER, metadata(shape, datatype), config)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("grpc://127.0.0.1:8001", ("grpc", "127.0.0.1:8001")),
        ("http://localhost:8000/", ("http", "localhost:8000")),
        (" http://[::1]:8000 ", ("http", "[::1]:8000")),
    ],
)
def test_urls_accepted(url: str, expected: tuple[str, str]) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    "url",
    ["https://h:1", "127.0.0.1:8001", "grpc://:8001", "http://h:port", "http://h:1/v2", "grpc://h"],
)
def test_urls_refused_in_one_line(url: str) -> None:
    with pytest.raises(InputError, match="use grpc://HOST:PORT or http://HOST:PORT"):
        parse_url(url)


def test_a_batching_model_reads_as_its_sample_dims() -> None:
    model = describe(["-1", "3", "224", "224"], 32)  # gRPC's JSON: int64 as strings
    assert model.dims == (3, 224, 224) and model.max_batch_size == 32
    assert model.fixed_batch is None and model.batch_dim and model.image_size == 224
    assert model.dtype == np.float32 and model.server == "triton 2.51.0"


def test_models_the_server_does_not_batch() -> None:
    fixed = describe([4, 3, 256, 256], 0, "FP16")
    assert (fixed.fixed_batch, fixed.batch_dim, fixed.dims) == (4, True, (3, 256, 256))
    assert fixed.dtype == np.float16
    single = describe([3, 224, 224], 0)
    assert (single.fixed_batch, single.batch_dim, single.dims) == (1, False, (3, 224, 224))


@pytest.mark.parametrize(
    ("shape", "datatype", "message"),
    [
        ([-1, 1], "BYTES", "takes BYTES; this client sends FP32"),
        ([-1, 3, 224, 200], "FP32", "expected N x C x S x S"),
        ([-1, 224], "FP32", "expected N x C x S x S"),
    ],
)
def test_models_this_client_cannot_feed(shape: list, datatype: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        describe(shape, 8, datatype)


def test_the_client_and_the_triton_backend_never_import_torch() -> None:
    """The backend runs in every Triton stub and the client on load generators: no torch."""
    code = (
        "import sys, resnet_deploy.serving.backend, resnet_deploy.serving.client\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"
