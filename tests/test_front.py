"""The HTTP front bounds every request before tritonserver reads it.

One JSON request declaring a huge shape made tritonserver abort: it allocates a JSON request's
tensors from the declared shape before checking it. The class is "a request whose declared or
decompressed size is beyond the bound", tested as a property of the check and against a real
server, which must refuse with KServe's error body and keep serving.
"""

from __future__ import annotations

import gzip
import json
import math
import urllib.error
import urllib.request

import numpy as np
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serving import ServedProcess, http_infer, in_process, running_server

pytest.importorskip("pytriton", reason="serve needs the [serve] extra (PyTriton)")

from resnet_deploy.serving.front import (
    BYTES_PER_ELEMENT,
    MAX_REQUEST_BYTES,
    check_infer_request,
)

ATOL = 1e-4
HUGE = [1, 3, 224, 224_000_000_000]  # the request that made tritonserver abort


def infer_body(shape: object, datatype: str = "FP32", data: object = (0.0,)) -> bytes:
    tensor = {"name": "input", "shape": shape, "datatype": datatype, "data": list(data)}
    return json.dumps({"inputs": [tensor]}).encode()


@settings(max_examples=300, deadline=None)
@given(
    shape=st.lists(st.integers(0, 10**12), min_size=0, max_size=6),
    datatype=st.sampled_from(sorted(BYTES_PER_ELEMENT)),
)
def test_a_declared_shape_passes_exactly_when_it_fits_the_bound(shape, datatype):
    refusal = check_infer_request(infer_body(shape, datatype), {})
    fits = math.prod(shape) * BYTES_PER_ELEMENT[datatype] <= MAX_REQUEST_BYTES
    assert (refusal is None) == fits
    if refusal:
        assert refusal.status == 400 and "more than the" in refusal.message


@given(shape=st.one_of(st.lists(st.floats() | st.text(max_size=3), min_size=1), st.text()))
def test_a_shape_that_is_not_integers_is_refused(shape):
    refusal = check_infer_request(infer_body(shape), {})
    assert refusal is not None and refusal.status == 400 and "shape must be" in refusal.message


def test_binary_requests_are_judged_by_their_json_header():
    header = infer_body(HUGE)
    body = header + b"\0" * 16
    headers = {"Inference-Header-Content-Length": str(len(header))}
    refusal = check_infer_request(body, headers)
    assert refusal is not None and refusal.status == 400


def test_a_compression_bomb_is_refused_without_inflating_it():
    bomb = gzip.compress(b" " * (MAX_REQUEST_BYTES + 1024))  # about 65 KB on the wire
    refusal = check_infer_request(bomb, {"Content-Encoding": "gzip"})
    assert refusal is not None and refusal.status == 413 and "inflates" in refusal.message
    small = gzip.compress(infer_body([1, 3, 224, 224]))
    assert check_infer_request(small, {"Content-Encoding": "gzip"}) is None


@pytest.fixture(scope="module")
def server(r18):
    with running_server(r18) as served:
        yield served


def post(server: ServedProcess, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}/v2/models/{server.name}/infer",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
@pytest.mark.parametrize(
    "shape", [HUGE, [1, 3, 224, 224_000], [2**40], [1, 3, 224, 2**62]], ids=str
)
def test_a_huge_declared_shape_is_refused_and_the_server_keeps_serving(server, r18, shape):
    tritonserver = psutil.Process(server.pid).children()[0].pid
    status, body = post(server, infer_body(shape))
    assert status == 400 and "more than the" in body["error"], body
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224), np.float32)
    np.testing.assert_allclose(http_infer(server, x), in_process(r18)(x), atol=ATOL, rtol=0)
    assert psutil.Process(server.pid).children()[0].pid == tritonserver


@pytest.mark.slow
def test_a_body_beyond_the_bound_is_refused(server):
    status, body = post(server, b"[" + b"0," * (MAX_REQUEST_BYTES // 2) + b"0]")
    assert status == 413 and "bytes a request may hold" in body["error"], body
