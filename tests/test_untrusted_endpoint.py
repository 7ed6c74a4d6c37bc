"""``bench --url`` against servers that answer wrongly: nothing they send is trusted.

A fake KServe v2 server (HTTP on a loopback thread, and one over gRPC) answers with what a broken
or hostile endpoint sends: no outputs, NaN, bytes that do not fit the shape, metadata without a
datatype or with dims that are not integers, HTML, a 500, an answer that never comes. Each must be
one ``Error:`` line naming what the server sent, never a traceback, never a success, and a
password in the URL is never shown. Every wait is bounded: the client's timeout, the server's
longest stall, and a join on shutdown.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from serving import HOST
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from resnet_deploy.errors import InputError, ResnetDeployError
from resnet_deploy.serving.client import (
    DATATYPES,
    SCHEMES,
    EndpointModel,
    EndpointOptions,
    ModelClient,
    _describe,
    connect,
    parse_url,
    redact_url,
)
from tests.helpers import cli

NAME = "m"
SIDE = 32  # small images: the fake never looks at the values
CLASSES = 1000
STALL_S = 5.0  # the longest a hanging fake waits, past the 1 s client timeout of the hang cases
BODY_LIMIT = 1 << 22  # the fake reads no request body larger than this
LOOP = ["--batch-sizes", "1", "--warmup", "1", "--iterations", "2"]
PASSWORD = "hunter2pw"


def model_metadata(mode: str) -> object:
    """What the fake says about its model, as Triton says it, or broken as ``mode`` asks."""
    tensor: dict[str, object] = {"name": "input", "datatype": "FP32", "shape": [-1, 3, SIDE, SIDE]}
    if mode == "no_datatype":
        del tensor["datatype"]
    elif mode == "float_dims":
        tensor["shape"] = [-1, 3, 32.5, SIDE]
    elif mode == "text_dims":
        tensor["shape"] = [-1, 3, "wide", SIDE]
    elif mode == "huge_dims":
        tensor["shape"] = [-1, 3, 10**6, 10**6]
    if mode == "metadata_list":
        return [tensor]
    output = {"name": "logits", "datatype": "FP32", "shape": [-1, CLASSES]}
    return {
        "name": NAME,
        "versions": ["1"],
        "platform": "fake",
        "inputs": [tensor],
        "outputs": [output],
    }


def logits(rows: int, mode: str) -> np.ndarray:
    values = np.random.default_rng(0).standard_normal((rows, CLASSES)).astype(np.float32)
    if mode == "nan":
        values[-1, 7] = np.nan
    return values


def infer_answer(rows: int, mode: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the fake's answer to an infer request of ``rows`` rows."""
    if mode == "html":
        return 200, {"Content-Type": "text/html"}, b"<html><body>login first</body></html>"
    if mode == "status_500":
        return 500, {"Content-Type": "text/html"}, b"<html>Internal Server Error</html>"
    if mode == "no_outputs":
        return 200, {"Content-Type": "application/json"}, b'{"model_name": "m", "outputs": []}'
    rows += mode == "extra_row"
    data = logits(rows, mode).tobytes()
    shape = [rows, CLASSES]
    if mode == "empty_data":  # what `serve` sent in the empty-output defect
        data = b""
    elif mode == "odd_bytes":
        data = data[:-3]
    datatype = "FP64" if mode == "fp64" else "FP32"
    output = {"name": "logits", "datatype": datatype, "shape": shape}
    output["parameters"] = {"binary_data_size": len(data)}
    header = json.dumps({"model_name": NAME, "outputs": [output]}).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return 200, headers, header + data


class FakeHandler(BaseHTTPRequestHandler):
    """KServe v2 over HTTP for one model, answering as the server's ``mode`` says."""

    protocol_version = "HTTP/1.1"
    server: FakeHTTPServer

    def do_GET(self) -> None:
        mode = self.server.mode
        if mode == "hang":
            self.server.stopping.wait(STALL_S)
        if self.path == "/v2":
            self.reply(200, {"name": "fake", "version": "0"})
        elif self.path == f"/v2/models/{NAME}":
            if mode == "metadata_html":
                self.reply(200, b"<html>not here</html>")
            else:
                self.reply(200, model_metadata(mode))
        elif self.path == f"/v2/models/{NAME}/ready":
            self.reply(200, b"")
        elif self.path == f"/v2/models/{NAME}/config":
            batch = "lots" if mode == "config_text" else 8
            self.reply(200, {"name": NAME, "max_batch_size": batch})
        else:
            self.reply(404, {"error": f"unknown model: {self.path}"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        if not 0 < length <= BODY_LIMIT:
            self.reply(400, {"error": "bad length"})
            return
        body = self.rfile.read(length)
        header_length = int(self.headers.get("Inference-Header-Content-Length", length))
        request = json.loads(body[:header_length])
        rows = int(request["inputs"][0]["shape"][0])
        if self.server.mode == "infer_hang":
            self.server.stopping.wait(STALL_S)
        status, headers, payload = infer_answer(rows, self.server.mode)
        self.send(status, headers, payload)

    def reply(self, status: int, answer: object) -> None:
        payload = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
        self.send(status, {"Content-Type": "application/json"}, payload)

    def send(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        try:
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(payload))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:  # the client gave up (the hang cases)
            pass

    def log_message(self, *args: object) -> None:
        """Quiet: the tests read the client's output."""


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    mode = "ok"
    stopping = threading.Event()


@pytest.fixture(scope="module")
def fake_http() -> Iterator[FakeHTTPServer]:
    server = FakeHTTPServer((HOST, 0), FakeHandler)
    server.stopping = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()


@contextmanager
def mode(server: FakeHTTPServer | FakeGRPC, name: str) -> Iterator[str]:
    """The fake answers as ``name`` says inside the block; its URL is given."""
    server.mode = name
    try:
        if isinstance(server, FakeHTTPServer):
            yield f"http://{HOST}:{server.server_address[1]}"
        else:
            yield f"grpc://{HOST}:{server.port}"
    finally:
        server.mode = "ok"


def one_error_line(args: list[object], *sent: str) -> str:
    """``resnet-deploy bench ARGS`` fails with exit 2 and one ``Error:`` line naming ``sent``."""
    result = cli("bench", *args, *LOOP)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if not line.startswith("...")]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in sent:
        assert fragment in lines[0], lines[0]
    assert PASSWORD not in result.output
    return lines[0]


def test_the_fake_answers_correctly_by_default(fake_http: FakeHTTPServer) -> None:
    """The control: the same fake, answering well, is benched with exit 0."""
    with mode(fake_http, "ok") as url:
        result = cli("bench", "--url", url, "--model-name", NAME, *LOOP, "--json")
    assert result.exit_code == 0, result.output
    (batch,) = json.loads(result.stdout)["batches"]
    assert batch["error"] is None and batch["runs"] == 2


@pytest.mark.parametrize(
    ("answer", "sent"),
    [
        ("no_outputs", ["without output 'logits'"]),
        ("nan", ["1 NaN or infinite values of 1000 in 'logits'"]),
        ("empty_data", ["shape [1, 1000]", "cannot reshape array of size 0"]),
        ("odd_bytes", ["shape [1, 1000]", "does not fit"]),
        ("extra_row", ["shape [2, 1000]", "expected [1, 1000]"]),
        ("fp64", ["'logits' as 'FP64'", "says FP32"]),
        ("html", ["m: an answer that is not KServe v2 JSON (Parse error at offset 0"]),
        ("status_500", ["HTTP 500 with a body that is not KServe v2 JSON: '<html>Internal"]),
        ("no_datatype", ["input 'input' takes no datatype"]),
        ("float_dims", ["shape is [-1, 3, 32.5, 32]", "list of integers"]),
        ("text_dims", ["shape is [-1, 3, 'wide', 32]", "list of integers"]),
        ("huge_dims", ["takes [-1, 3, 1000000, 1000000]", "S <= 4096"]),
        ("metadata_list", ["the model metadata is [{"]),
        ("metadata_html", ["an answer that is not KServe v2 JSON (Parse error at offset 0"]),
        ("config_text", ["max_batch_size is 'lots'"]),
    ],
)
def test_a_bad_answer_is_one_error_line(
    fake_http: FakeHTTPServer, answer: str, sent: list[str]
) -> None:
    with mode(fake_http, answer) as url:
        one_error_line(["--url", url, "--model-name", NAME], *sent)


@pytest.mark.parametrize("answer", ["hang", "infer_hang"])
def test_an_answer_that_never_comes_is_a_timeout(fake_http: FakeHTTPServer, answer: str) -> None:
    with mode(fake_http, answer) as url:
        options = EndpointOptions(url, model_name=NAME, timeout_s=1.0)
        with pytest.raises(ResnetDeployError, match="no answer in time"):
            if answer == "hang":
                connect(options)
            else:
                fake_http.mode = "ok"
                model = connect(options)
                fake_http.mode = answer
                with ModelClient(model, timeout_s=1.0) as client:
                    client.infer(client.place(np.zeros((1, 3, SIDE, SIDE), np.float32)))


def test_a_password_in_the_url_is_never_shown(fake_http: FakeHTTPServer) -> None:
    with mode(fake_http, "ok") as url:
        secret = url.replace("http://", f"http://user:{PASSWORD}@")
        line = one_error_line(["--url", secret, "--model-name", NAME], "credentials")
    assert "***@" in line
    assert one_error_line(["--url", f"http://u:{PASSWORD}@[::1"], "***@[::1")
    assert one_error_line(["--url", "http://[::1"], "http://[::1", "cannot be read")


# --- gRPC: the same checks behind the other protocol ------------------------------------------


class FakeGRPC(service_pb2_grpc.GRPCInferenceServiceServicer):
    """KServe v2 over gRPC for one model, answering as ``mode`` says."""

    mode = "ok"
    port = 0

    def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(name="fake", version="0")

    def ModelReady(self, request, context):
        return service_pb2.ModelReadyResponse(ready=True)

    def ModelMetadata(self, request, context):
        shape = [-1, 3, SIDE, SIDE]
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        datatype = "" if self.mode == "no_datatype" else "FP32"  # "" leaves it out of the JSON
        return service_pb2.ModelMetadataResponse(
            name=NAME,
            platform="fake",
            inputs=[tensor(name="input", datatype=datatype, shape=shape)],
            outputs=[tensor(name="logits", datatype="FP32", shape=[-1, CLASSES])],
        )

    def ModelConfig(self, request, context):
        config = model_config_pb2.ModelConfig(name=NAME, max_batch_size=8)
        return service_pb2.ModelConfigResponse(config=config)

    def ModelInfer(self, request, context):
        rows = request.inputs[0].shape[0]
        output = service_pb2.ModelInferResponse.InferOutputTensor(
            name="logits", datatype="FP32", shape=[rows, CLASSES]
        )
        data = b"" if self.mode == "empty_data" else logits(rows, self.mode).tobytes()
        outputs = [] if self.mode == "no_outputs" else [output]
        return service_pb2.ModelInferResponse(
            model_name=NAME, outputs=outputs, raw_output_contents=[data] if outputs else []
        )


@pytest.fixture(scope="module")
def fake_grpc() -> Iterator[FakeGRPC]:
    servicer = FakeGRPC()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    servicer.port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    try:
        yield servicer
    finally:
        server.stop(grace=None).wait(timeout=10)


@pytest.mark.parametrize(
    ("answer", "sent"),
    [
        ("ok", []),
        ("no_outputs", ["without output 'logits'"]),
        ("nan", ["1 NaN or infinite values of 1000"]),
        ("empty_data", ["shape [1, 1000]", "cannot reshape array of size 0"]),
        ("no_datatype", ["input 'input' takes no datatype"]),
    ],
)
def test_grpc_answers_are_checked_too(fake_grpc: FakeGRPC, answer: str, sent: list[str]) -> None:
    with mode(fake_grpc, answer) as url:
        if answer == "ok":
            result = cli("bench", "--url", url, "--model-name", NAME, *LOOP)
            assert result.exit_code == 0, result.output
        else:
            one_error_line(["--url", url, "--model-name", NAME], *sent)


# --- properties: any metadata, any URL --------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
# where a broken server differs from a good one: a key of the metadata, of its input or output
# tensor, or the config's max_batch_size
PLACES = [
    ("metadata", "name"),
    ("metadata", "inputs"),
    ("metadata", "outputs"),
    ("input", "name"),
    ("input", "datatype"),
    ("input", "shape"),
    ("output", "name"),
    ("output", "datatype"),
    ("output", "shape"),
    ("config", "max_batch_size"),
    ("config", "config"),
]


def good_records() -> tuple[dict, dict]:
    metadata = model_metadata("ok")
    assert isinstance(metadata, dict)
    return metadata, {"max_batch_size": 8}


def describe(metadata: object, config: object) -> EndpointModel:
    options = EndpointOptions(f"http://{HOST}:1")
    return _describe(options, "http", f"{HOST}:1", {"name": "fake"}, metadata, config)


def assert_usable(model: EndpointModel) -> None:
    """What the rest of the client relies on, for anything _describe accepts."""
    assert model.input_datatype in DATATYPES and model.output_datatype in DATATYPES
    assert len(model.dims) == 3 and all(isinstance(d, int) and d >= 1 for d in model.dims)
    assert model.dims[1] == model.dims[2] <= 4096 and model.dims[0] <= 16
    assert all(isinstance(d, int) and (d >= 1 or d == -1) for d in model.output_dims)
    assert isinstance(model.name, str) and isinstance(model.output_name, str)
    assert model.fixed_batch is None or 1 <= model.fixed_batch <= 65536


def assert_one_line(error: Exception) -> None:
    message = str(error)
    assert message and "\n" not in message and len(message) < 800 and message.isprintable()


@settings(max_examples=150, deadline=None)
@given(place=st.sampled_from(PLACES), value=JSON_VALUES, drop=st.booleans())
def test_any_broken_field_of_metadata_is_an_input_error(
    place: tuple[str, str], value: object, drop: bool
) -> None:
    metadata, config = good_records()
    where, key = place
    record = {
        "metadata": metadata,
        "input": metadata["inputs"][0],
        "output": metadata["outputs"][0],
        "config": config,
    }[where]
    if drop:
        record.pop(key, None)
    else:
        record[key] = value
    try:
        model = describe(metadata, config)
    except InputError as error:
        assert_one_line(error)
    else:
        assert_usable(model)


@settings(max_examples=100, deadline=None)
@given(metadata=JSON_VALUES, config=JSON_VALUES)
def test_any_metadata_at_all_is_an_input_error_or_usable(metadata: object, config: object) -> None:
    try:
        model = describe(metadata, config)
    except InputError as error:
        assert_one_line(error)
    else:
        assert_usable(model)


URL_PIECES = st.tuples(
    st.sampled_from(["http://", "grpc://", "https://", "HTTP://", "", "http:/", "grpc:"]),
    st.sampled_from(["", f"user:{PASSWORD}@", f"{PASSWORD}@", f":{PASSWORD}@", "a@b@"]),
    st.sampled_from(["127.0.0.1", "[::1]", "[::1", "::1]", "[zz]", "localhost", "", "h st", "é"]),
    st.text(alphabet=":0123456789+-x٣ ", max_size=7),
    st.sampled_from(["", "/", "/v2", "?q=1", "#f", "\n", f"/{PASSWORD}@x"]),
)


@settings(max_examples=300, deadline=None)
@given(pieces=URL_PIECES, noise=st.text(max_size=20))
def test_any_url_is_parsed_or_refused_in_one_line_without_the_password(
    pieces: tuple[str, ...], noise: str
) -> None:
    for url in ("".join(pieces), noise, f"http://user:{PASSWORD}@{noise}"):
        try:
            scheme, address = parse_url(url)
        except InputError as error:
            assert_one_line(error)
            assert PASSWORD not in str(error)
        else:
            assert scheme in SCHEMES and PASSWORD not in address and "@" not in address
            assert parse_url(f"{scheme}://{address}") == (scheme, address)  # a clean address
        assert PASSWORD not in redact_url(url)
