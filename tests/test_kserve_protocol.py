"""`serve` against the KServe v2 (Open Inference) protocol document, over HTTP and gRPC.

Each test checks what the protocol requires of a compliant server: health, server and model
metadata, inference, and errors (an HTTP error status with a ``{"error": ...}`` body; a gRPC
status code). HTTP is spoken with the standard library, gRPC with the service's own stubs, so
no client library smooths over a deviation. Where Triton itself answers in its own way (it is
what `serve` runs, and `triton`'s repository is served by it too), the test asserts what
Triton does and says so.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from serving import (  # tests/ is on sys.path under pytest's default import mode
    CLIENT_TIMEOUT_S,
    ServedProcess,
    in_process,
    running_server,
)
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

pytest.importorskip("pytriton", reason="serve needs the [serve] extra (PyTriton)")

from resnet_deploy.runtime.providers import SessionConfig, create_session

ATOL = 1e-4  # the same ONNX Runtime on the same inputs; batching may change summation order
DATATYPES = {  # the protocol's tensor data types
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(r18: Path):
    with running_server(r18) as server:
        yield server


@pytest.fixture(scope="module")
def logits(r18: Path):
    """ONNX Runtime in process: the logits of a batch, to compare served answers with."""
    return in_process(r18)


@pytest.fixture(scope="module")
def stub(server: ServedProcess):
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def http(server: ServedProcess, path: str, body: object | bytes | None = None) -> tuple[int, bytes]:
    """GET ``path``, or POST ``body`` (JSON unless bytes); the status and the raw body."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{server.http_address}{path}", data=data)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def http_json(server: ServedProcess, path: str, body: object | None = None) -> dict:
    status, text = http(server, path, body)
    assert status == 200, text
    return json.loads(text)


def http_error(server: ServedProcess, path: str, body: object | bytes | None = None) -> int:
    """The status of a request that must fail; its body must be exactly ``{"error": text}``."""
    status, text = http(server, path, body)
    assert status >= 400, text
    answer = json.loads(text)
    assert list(answer) == ["error"] and isinstance(answer["error"], str) and answer["error"]
    return status


def infer_body(x: np.ndarray, **fields: object) -> dict:
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.tolist()}
    return {"inputs": [tensor], **fields}


def batch(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((size, 3, 224, 224), np.float32)


def check_tensor_metadata(tensor: dict) -> None:
    assert set(tensor) == {"name", "datatype", "shape"}
    assert isinstance(tensor["name"], str) and tensor["datatype"] in DATATYPES
    assert all(isinstance(d, int) and (d > 0 or d == -1) for d in tensor["shape"])


def grpc_code(call, request) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as failure:
        call(request, timeout=CLIENT_TIMEOUT_S)
    assert failure.value.details()
    return failure.value.code()


# --- HTTP/REST --------------------------------------------------------------------------------


def test_http_health_is_the_status_code_with_an_empty_body(server: ServedProcess):
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        f"/v2/models/{server.name}/ready",
        f"/v2/models/{server.name}/versions/1/ready",
        f"/v2/models/{server.image_name}/ready",
    ):
        assert http(server, path) == (200, b""), path
    # Not ready is any 4xx; Triton adds a body the protocol says "should" be empty.
    for path in ("/v2/models/resnet9000/ready", f"/v2/models/{server.name}/versions/7/ready"):
        status, _ = http(server, path)
        assert 400 <= status < 500, path


def test_http_server_metadata(server: ServedProcess):
    answer = http_json(server, "/v2")
    assert set(answer) == {"name", "version", "extensions"}
    assert answer["name"] == "triton" and isinstance(answer["version"], str) and answer["version"]
    assert all(isinstance(e, str) for e in answer["extensions"])
    # What our documentation and clients use beyond the protocol's core: Triton's extensions.
    assert {"classification", "binary_tensor_data", "model_configuration"} <= set(
        answer["extensions"]
    )


def test_http_model_metadata(server: ServedProcess, r18: Path):
    session = create_session(r18, SessionConfig())
    (x,), (y,) = session.get_inputs(), session.get_outputs()
    for path in (f"/v2/models/{server.name}", f"/v2/models/{server.name}/versions/1"):
        answer = http_json(server, path)
        assert set(answer) == {"name", "versions", "platform", "inputs", "outputs"}
        assert (answer["name"], answer["versions"]) == (server.name, ["1"])
        # Triton names the backend that runs the model (serve's Python backend), not the
        # protocol's "<project>_<format>"; the protocol calls platform information only.
        assert answer["platform"] == "python"
        for tensor in answer["inputs"] + answer["outputs"]:
            check_tensor_metadata(tensor)
        assert answer["inputs"] == [
            {"name": x.name, "datatype": "FP32", "shape": [-1, 3, 224, 224]}
        ]
        assert answer["outputs"] == [{"name": y.name, "datatype": "FP32", "shape": [-1, 1000]}]
    image = http_json(server, f"/v2/models/{server.image_name}")
    assert image["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1, 1]}]
    for tensor in image["outputs"]:
        check_tensor_metadata(tensor)


def test_http_model_config_is_triton_model_config(server: ServedProcess):
    """The model configuration extension: the JSON is a ModelConfig, the image layout in it."""
    config = json_format.ParseDict(
        http_json(server, f"/v2/models/{server.name}/config"), mc.ModelConfig()
    )
    assert (config.name, config.max_batch_size) == (server.name, 32)
    (x,) = config.input
    assert (x.name, list(x.dims), x.format) == ("input", [3, 224, 224], mc.ModelInput.FORMAT_NCHW)


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_http_json_inference(server: ServedProcess, logits, nested: bool):
    """Tensor data may be flat or nested (row-major either way); the id comes back; without
    "outputs" every output is returned."""
    x = batch(2, seed=1)
    body = infer_body(x, id="req-42", parameters={})
    if not nested:
        body["inputs"][0]["data"] = x.ravel().tolist()
    for path in (f"/v2/models/{server.name}/infer", f"/v2/models/{server.name}/versions/1/infer"):
        answer = http_json(server, path, body)
        assert answer["model_name"] == server.name and answer["model_version"] == "1"
        assert answer["id"] == "req-42"
        (output,) = answer["outputs"]
        assert {"name", "shape", "datatype", "data"} <= set(output)
        assert (output["name"], output["shape"], output["datatype"]) == (
            "logits",
            [2, 1000],
            "FP32",
        )
        got = np.asarray(output["data"], np.float32).reshape(output["shape"])
        np.testing.assert_allclose(got, logits(x), atol=ATOL, rtol=0)


def test_http_requested_output_and_classification(server: ServedProcess, logits):
    x = batch(1, seed=2)
    plain = http_json(
        server, f"/v2/models/{server.name}/infer", infer_body(x, outputs=[{"name": "logits"}])
    )
    assert [o["name"] for o in plain["outputs"]] == ["logits"]
    requested = {"name": "logits", "parameters": {"classification": 2}}
    answer = http_json(
        server, f"/v2/models/{server.name}/infer", infer_body(x, outputs=[requested])
    )
    (output,) = answer["outputs"]
    assert (output["shape"], output["datatype"]) == ([1, 2], "BYTES")
    top = [int(entry.split(":")[1]) for entry in output["data"]]
    assert top == list(np.argsort(-logits(x)[0], kind="stable")[:2])


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v2/models/resnet9000", None, 404),
        ("/v2/models/resnet9000/config", None, 404),
        ("/v2/models/{name}/versions/7", None, 404),
        ("/v2/models/resnet9000/infer", "good", 404),
        ("/v2/models/{name}/versions/7/infer", "good", 404),
        ("/v2/models/{name}/infer", {"inputs": []}, 400),
        ("/v2/models/{name}/infer", "wrong-name", 400),
        ("/v2/models/{name}/infer", "wrong-shape", 400),
        ("/v2/models/{name}/infer", "wrong-datatype", 400),
        ("/v2/models/{name}/infer", "unknown-output", 400),
        # Triton core answers these two with 500, not the protocol's "typically 400".
        ("/v2/models/{name}/infer", "short-data", 500),
        ("/v2/models/{name}/infer", b'{"inputs": [', 500),
    ],
)
def test_http_errors_are_an_error_object(server: ServedProcess, path: str, body, status: int):
    x = batch(1)
    bodies = {
        "good": infer_body(x),
        "wrong-name": {"inputs": [{**infer_body(x)["inputs"][0], "name": "pixels"}]},
        "wrong-shape": infer_body(batch(1)[:, :, :100, :100]),
        "wrong-datatype": {"inputs": [{**infer_body(x)["inputs"][0], "datatype": "FP64"}]},
        "unknown-output": infer_body(x, outputs=[{"name": "probabilities"}]),
        "short-data": {"inputs": [{**infer_body(x)["inputs"][0], "data": [0.0, 1.0]}]},
    }
    request = bodies.get(body, body) if isinstance(body, str) else body
    assert http_error(server, path.format(name=server.name), request) == status
    assert server.ready()


# --- gRPC -------------------------------------------------------------------------------------


def test_grpc_health(server: ServedProcess, stub):
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=CLIENT_TIMEOUT_S).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=CLIENT_TIMEOUT_S).ready
    for name, version in ((server.name, ""), (server.name, "1"), (server.image_name, "")):
        request = pb.ModelReadyRequest(name=name, version=version)
        assert stub.ModelReady(request, timeout=CLIENT_TIMEOUT_S).ready
    # Triton answers OK with ready false for a model it does not know (not an error status).
    unknown = pb.ModelReadyRequest(name="resnet9000")
    assert not stub.ModelReady(unknown, timeout=CLIENT_TIMEOUT_S).ready


def test_grpc_metadata_matches_http(server: ServedProcess, stub):
    metadata = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=CLIENT_TIMEOUT_S)
    assert json_format.MessageToDict(metadata) == http_json(server, "/v2")
    for name in (server.name, server.image_name):
        request = pb.ModelMetadataRequest(name=name)
        model = stub.ModelMetadata(request, timeout=CLIENT_TIMEOUT_S)
        answer = json_format.MessageToDict(model)
        for tensor in answer["inputs"] + answer["outputs"]:  # int64 is a JSON string here
            tensor["shape"] = [int(d) for d in tensor["shape"]]
        assert answer == http_json(server, f"/v2/models/{name}")
    config = stub.ModelConfig(pb.ModelConfigRequest(name=server.name), timeout=CLIENT_TIMEOUT_S)
    served = json_format.ParseDict(
        http_json(server, f"/v2/models/{server.name}/config"), mc.ModelConfig()
    )
    assert config.config == served


@pytest.mark.parametrize("raw", [True, False], ids=["raw_contents", "fp32_contents"])
def test_grpc_inference(server: ServedProcess, stub, logits, raw: bool):
    x = batch(2, seed=3)
    request = pb.ModelInferRequest(model_name=server.name, model_version="1", id="req-7")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=x.shape)
    if raw:
        request.raw_input_contents.append(x.tobytes())
    else:
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
    request.outputs.add(name="logits")
    response = stub.ModelInfer(request, timeout=CLIENT_TIMEOUT_S)
    assert (response.model_name, response.model_version, response.id) == (
        server.name,
        "1",
        "req-7",
    )
    (output,) = response.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("logits", "FP32", [2, 1000])
    # Triton always answers in raw_output_contents, whichever way the request came.
    (raw_output,) = response.raw_output_contents
    got = np.frombuffer(raw_output, np.float32).reshape(2, 1000)
    np.testing.assert_allclose(got, logits(x), atol=ATOL, rtol=0)


def infer_request(server: ServedProcess, **changes: object) -> pb.ModelInferRequest:
    """A good request for one image, with ``changes`` made to it (or to its input)."""
    fields = {"model_name": server.name, "model_version": ""}
    fields.update({k: v for k, v in changes.items() if k in fields})
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 3, 224, 224]}
    tensor.update({k: v for k, v in changes.items() if k in tensor})
    request = pb.ModelInferRequest(**fields)
    request.inputs.add(**tensor)
    request.raw_input_contents.append(changes.get("data", batch(1).tobytes()))
    return request


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"model_name": "resnet9000"}, grpc.StatusCode.NOT_FOUND),
        ({"model_version": "7"}, grpc.StatusCode.NOT_FOUND),
        ({"name": "pixels"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"shape": [1, 3, 100, 100]}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"datatype": "FP64"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"data": b"\0" * 16}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["model", "version", "input-name", "shape", "datatype", "byte-size"],
)
def test_grpc_inference_errors_are_status_codes(server, stub, changes, code):
    assert grpc_code(stub.ModelInfer, infer_request(server, **changes)) == code
    assert server.ready()


def test_grpc_metadata_errors_are_status_codes(stub):
    assert grpc_code(stub.ModelMetadata, pb.ModelMetadataRequest(name="resnet9000")) == (
        grpc.StatusCode.NOT_FOUND
    )
    assert grpc_code(stub.ModelConfig, pb.ModelConfigRequest(name="resnet9000")) == (
        grpc.StatusCode.NOT_FOUND
    )
