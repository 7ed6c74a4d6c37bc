"""`resnet-deploy serve`: a real tritonserver on loopback, driven by tritonclient and raw HTTP.

Two servers are started in this module (each takes ~15 s here): one shared by the read-only
tests and stopped with SIGINT at the end, one for overload and then SIGTERM with requests in
flight. Every request loop is bounded in count and time.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from click.testing import CliRunner
from serving import (  # tests/ is on sys.path under pytest's default import mode
    CLIENT_TIMEOUT_S,
    ServedProcess,
    assert_clean_exit,
    classify,
    count_model_reads,
    descendants,
    free_ports,
    grpc_infer,
    http_infer,
    in_process,
    jpeg,
    leftovers,
    running_server,
    serve_command,
    start_server,
    stop_server,
)
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

pytest.importorskip("pytriton", reason="serve needs the [serve] extra (PyTriton)")

from resnet_deploy.cli import main
from resnet_deploy.errors import InputError, ProviderError
from resnet_deploy.model.labels import imagenet_classes
from resnet_deploy.predict import PredictOptions, predict
from resnet_deploy.runtime.names import SPINNING
from resnet_deploy.runtime.providers import SessionConfig, create_session
from resnet_deploy.serving import server as server_module
from resnet_deploy.serving.backend import decode_image, imported_packages
from resnet_deploy.serving.config import parse_config
from resnet_deploy.serving.process import log_cause, tritonserver_environment, tritonserver_files
from resnet_deploy.serving.repository import TritonOptions, write_model_repository
from resnet_deploy.serving.server import ModelServer, ServeOptions, check_options

ATOL = 1e-4  # the same ONNX Runtime on the same inputs; batching may change summation order


@pytest.fixture(scope="module")
def reference(r18: Path) -> Callable[[np.ndarray], np.ndarray]:
    return in_process(r18)


@pytest.fixture(scope="module")
def server(r18: Path, tmp_path_factory: pytest.TempPathFactory):
    """The shared server; its SIGINT stop at the end must be clean, and its record right."""
    record = tmp_path_factory.mktemp("serve") / "serve.json"
    with running_server(r18, "--json", str(record), stop_signal=signal.SIGINT) as server:
        yield server
    result = json.loads(record.read_text())
    assert result["stopped_by"] == "SIGINT"
    assert result["endpoints"]["model_name"] == "resnet18"
    assert result["endpoints"]["image_model_name"] == "resnet18_image"
    assert result["endpoints"]["grpc_url"] == f"grpc://127.0.0.1:{server.grpc_port}"
    assert result["max_batch_size"] == 32 and result["max_queue_size"] == 128
    assert result["startup_s"] > 0 and result["uptime_s"] > 0


def batch(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((size, 3, 224, 224), np.float32)


def metric(server: ServedProcess, name: str, model: str) -> float:
    pattern = rf'^{name}{{model="{re.escape(model)}",version="1"}} (\S+)$'
    found = re.search(pattern, server.metrics(), re.M)
    assert found, f"{name} for {model} not in the metrics"
    return float(found[1])


def metric_reaching(server: ServedProcess, name: str, model: str, target: float) -> float:
    """The metric once it reaches ``target``, or its value after 10 s: Triton updates its
    counters a moment after a response is sent."""
    deadline = time.monotonic() + 10
    while (value := metric(server, name, model)) < target and time.monotonic() < deadline:
        time.sleep(0.1)
    return value


def post(
    server: ServedProcess, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def json_request(
    shape: list[int], datatype: str = "FP32", name: str = "input"
) -> tuple[bytes, dict[str, str]]:
    count = int(np.prod(shape))
    tensor = {"name": name, "shape": shape, "datatype": datatype, "data": [0.0] * count}
    return json.dumps({"inputs": [tensor]}).encode(), {"Content-Type": "application/json"}


def binary_request(shape: list[int]) -> tuple[bytes, dict[str, str]]:
    """KServe v2's binary extension: a JSON header, then the raw float32 bytes."""
    data = np.zeros(shape, np.float32).tobytes()
    tensor = {"name": "input", "shape": shape, "datatype": "FP32"}
    tensor["parameters"] = {"binary_data_size": len(data)}
    header = json.dumps({"inputs": [tensor]}).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header))}


def in_threads(count: int, work: Callable[[int], object]) -> list[object]:
    """``work(i)`` in ``count`` threads released together; each result or the exception raised."""
    results: list[object] = [None] * count
    barrier = threading.Barrier(count)

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = work(i)
        except Exception as exc:  # a rejection is a result here, not a test failure
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * CLIENT_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "a client never returned"
    return results


# --- against the shared server ---------------------------------------------------------------


@pytest.mark.slow
def test_http_and_grpc_equal_in_process(server, reference):
    x = batch(3)
    expected = reference(x)
    np.testing.assert_allclose(http_infer(server, x), expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(http_infer(server, x, binary=False), expected, atol=ATOL, rtol=0)
    np.testing.assert_allclose(grpc_infer(server, x), expected, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_served_config_is_what_triton_writes(server, r18, tmp_path):
    written = write_model_repository(r18, TritonOptions(repo=tmp_path / "repo"))
    repo_config = parse_config(written.config_file.read_text())
    client = grpcclient.InferenceServerClient(server.grpc_address)
    try:
        served = client.get_model_config(server.name).config
    finally:
        client.close()
    assert served.name == repo_config.name
    assert served.max_batch_size == repo_config.max_batch_size
    for kind in ("input", "output"):
        pairs = list(zip(getattr(served, kind), getattr(repo_config, kind), strict=True))
        for got, want in pairs:
            assert (got.name, got.data_type, list(got.dims)) == (
                want.name,
                want.data_type,
                list(want.dims),
            )
    labels = [(o.name, o.label_filename) for o in served.output]
    assert labels == [(o.name, o.label_filename) for o in repo_config.output]
    assert ("logits", "labels.txt") in labels
    batching, repo_batching = served.dynamic_batching, repo_config.dynamic_batching
    assert list(batching.preferred_batch_size) == list(repo_batching.preferred_batch_size)
    assert batching.max_queue_delay_microseconds == repo_batching.max_queue_delay_microseconds
    assert batching.default_queue_policy.max_queue_size == ServeOptions().max_queue_size


@pytest.mark.slow
def test_classification_names_the_top_classes(server, reference):
    """Triton's classification extension reads the served labels.txt, as the repository's."""
    x = batch(2, seed=3)
    client = httpclient.InferenceServerClient(server.http_address, network_timeout=CLIENT_TIMEOUT_S)
    try:
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        output = httpclient.InferRequestedOutput("logits", class_count=3)
        top = client.infer(server.name, [tensor], outputs=[output]).as_numpy("logits")
    finally:
        client.close()
    names = imagenet_classes()
    for row, logits in zip(top, reference(x), strict=True):
        entries = [entry.decode().split(":", 2) for entry in row]
        indices = [int(index) for _, index, _ in entries]
        assert indices == list(np.argsort(-logits, kind="stable")[:3])
        assert [label for _, _, label in entries] == [names[i] for i in indices]


@pytest.mark.slow
def test_concurrent_clients_are_batched(server, reference):
    clients, rounds = 16, 3
    x = batch(1, seed=1)
    expected = reference(x)
    before = metric(server, "nv_inference_count", server.name)
    before_exec = metric(server, "nv_inference_exec_count", server.name)

    def work(i: int) -> int:
        for _ in range(rounds):
            np.testing.assert_allclose(grpc_infer(server, x), expected, atol=ATOL, rtol=0)
        return rounds

    results = in_threads(clients, work)
    assert results == [rounds] * clients, results
    inferences = metric_reaching(
        server, "nv_inference_count", server.name, before + clients * rounds
    )
    inferences -= before
    executions = metric(server, "nv_inference_exec_count", server.name) - before_exec
    assert inferences == clients * rounds
    assert executions < inferences, "no batch of two or more requests was formed"


@pytest.mark.slow
def test_image_model_matches_predict(server, r18, tmp_path):
    images = [jpeg(seed) for seed in range(3)]
    result = classify(server, images)
    files = []
    for i, data in enumerate(images):
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(data)
    report = predict(r18, files, PredictOptions(top=5))
    for row, prediction in enumerate(report.predictions):
        assert result["error"][row, 0] == b""
        assert [s.class_index for s in prediction.top] == list(result["class_indices"][row])
        assert [s.class_name.encode() for s in prediction.top] == list(result["classes"][row])
        expected = [s.probability for s in prediction.top]
        np.testing.assert_allclose(result["probabilities"][row], expected, atol=1e-5)


@pytest.mark.slow
def test_non_image_payload_fails_only_its_own_row(server):
    result = classify(server, [b"this is not an image", jpeg(), b""])
    assert b"cannot read image" in result["error"][0, 0]
    assert result["error"][1, 0] == b""
    assert result["classes"][1, 0] != b""
    assert b"empty payload" in result["error"][2, 0]
    assert list(result["classes"][0]) == [b""] * 5
    assert server.ready(server.image_name)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("request_", "status", "message"),
    [
        (binary_request([1, 3, 100, 100]), 400, "unexpected shape for input 'input'"),
        (json_request([1, 3, 224, 224], "FP64"), 400, "data-type is 'FP64'"),
        (json_request([1, 3, 224, 224], name="pixels"), 400, "unexpected inference input"),
        (binary_request([0, 3, 224, 224]), 400, "input byte size mismatch"),
        (binary_request([33, 3, 224, 224]), 400, "batch-size must be <= 32"),
        ((b'{"inputs": [ ', {}), 500, "failed to parse the request JSON"),
    ],
    ids=["shape", "dtype", "name", "empty-batch", "oversized-batch", "malformed-json"],
)
def test_bad_request_is_a_clear_error(server, request_, status, message):
    code, text = post(server, f"/v2/models/{server.name}/infer", *request_)
    assert code == status and message in text, text
    assert server.ready()


@pytest.mark.slow
def test_unknown_model_is_a_clear_error(server):
    code, text = post(server, "/v2/models/resnet9000/infer", *binary_request([1, 3, 224, 224]))
    assert code == 404 and "unknown model" in text


@pytest.mark.slow
def test_client_disconnecting_mid_request_leaves_server_healthy(server, reference):
    body, _ = binary_request([2, 3, 224, 224])
    head = (
        f"POST /v2/models/{server.name}/infer HTTP/1.1\r\nHost: x\r\n"
        f"Inference-Header-Content-Length: {len(body) - 2 * 3 * 224 * 224 * 4}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    for payload in (head + body[: len(body) // 2], head + body):  # half a body; whole, unread
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as raw:
            raw.sendall(payload)
    x = batch(1, seed=2)
    np.testing.assert_allclose(http_infer(server, x), reference(x), atol=ATOL, rtol=0)
    assert server.ready()


# --- a second server: overload, then SIGTERM with requests in flight ------------------------


@pytest.mark.slow
def test_overload_rejects_clearly_then_sigterm_drains(r18, reference):
    args = ("--max-queue-size", "2", "--max-batch-size", "4", "--max-queue-delay-us", "0")
    server = start_server(r18, *args, "--instances", "2", "--threads", "1")
    try:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        config = client.get_model_config(server.name).config
        client.close()
        kinds = [(g.count, g.kind) for g in config.instance_group]
        assert kinds == [(2, mc.ModelInstanceGroup.KIND_CPU)]
        assert config.dynamic_batching.default_queue_policy.max_queue_size == 2
        x = batch(4, seed=3)
        expected = reference(x)
        ok = rejected = 0
        for _ in range(3):  # the queue fills as soon as clients outnumber it; bounded retries
            before = metric(server, "nv_inference_request_success", server.name)
            results = in_threads(16, lambda i: grpc_infer(server, x))
            for result in results:
                if isinstance(result, InferenceServerException):
                    assert "Exceeds maximum queue size" in result.message(), result
                else:
                    assert isinstance(result, np.ndarray), result
                    np.testing.assert_allclose(result, expected, atol=ATOL, rtol=0)
            ok = sum(isinstance(r, np.ndarray) for r in results)
            rejected = len(results) - ok
            successes = metric_reaching(
                server, "nv_inference_request_success", server.name, before + ok
            )
            successes -= before
            assert successes == ok, "the server counts other successes than the clients saw"
            if rejected:
                break
        assert rejected >= 1 and ok >= 1
        np.testing.assert_allclose(grpc_infer(server, x), expected, atol=ATOL, rtol=0)

        # SIGTERM while requests are queued and running: each is still answered correctly.
        answers: list[object] = []
        flight = threading.Thread(
            target=lambda: answers.extend(in_threads(3, lambda i: http_infer(server, x)))
        )
        flight.start()
        deadline = time.monotonic() + 30
        while metric(server, "nv_inference_pending_request_count", server.name) < 1:
            assert flight.is_alive() and time.monotonic() < deadline, "no request seen in flight"
            time.sleep(0.01)
        stop_server(server, signal.SIGTERM)
        flight.join(timeout=2 * CLIENT_TIMEOUT_S)
        assert len(answers) == 3
        for answer in answers:
            assert isinstance(answer, np.ndarray), answer
            np.testing.assert_allclose(answer, expected, atol=ATOL, rtol=0)
        assert "stopped by SIGTERM" in server.stdout()
    finally:
        code = stop_server(server)
    assert_clean_exit(server, code)


# --- no server needed ----------------------------------------------------------------------


def test_port_in_use_is_a_one_line_error(r18):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        grpc, metrics = free_ports(2)
        args = ["serve", str(r18), "--http-port", str(port), "--grpc-port", str(grpc)]
        result = CliRunner().invoke(main, [*args, "--metrics-port", str(metrics)])
    assert result.exit_code == 2
    assert f"Error: --http-port: port {port} on 127.0.0.1 is in use" in result.output
    assert "Traceback" not in result.output


def test_unavailable_provider_is_the_provider_error(r18):
    try:
        create_session(r18, SessionConfig(provider="cuda"))
    except ProviderError:
        pass
    else:
        pytest.skip("CUDA runs here")
    ports = [str(p) for p in free_ports(3)]
    args = ["serve", str(r18), "--provider", "cuda", "--http-port", ports[0]]
    result = CliRunner().invoke(main, [*args, "--grpc-port", ports[1], "--metrics-port", ports[2]])
    assert result.exit_code == 2
    assert "CUDAExecutionProvider" in result.output
    assert "Traceback" not in result.output


def test_a_file_onnx_runtime_cannot_load_fails_before_any_server(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    ports = [str(p) for p in free_ports(3)]
    args = ["serve", str(bad), "--http-port", ports[0], "--grpc-port", ports[1]]
    result = CliRunner().invoke(main, [*args, "--metrics-port", ports[2]])
    assert result.exit_code == 2 and "not an ONNX model" in result.output


@pytest.mark.parametrize(
    ("options", "message", "fields"),
    [
        (ServeOptions(http_port=0), "ports must be between 1 and 65535", ["http_port"]),
        (ServeOptions(grpc_port=8000), "ports must differ", ["http_port", "grpc_port"]),
        (ServeOptions(max_queue_size=-1), "the queue bound must be 0 or more", ["max_queue_size"]),
        (ServeOptions(instances=0), "instances must be at least 1", ["instances"]),
        (ServeOptions(top_k=1001), "top-k must be between 1 and 1000", ["top_k"]),
        (ServeOptions(provider="quantum"), "unknown provider", []),
    ],
)
def test_bad_options_are_refused(options, message, fields):
    """The library names the concept and the option fields; the CLI turns fields into flags."""
    with pytest.raises(InputError, match=re.escape(message)) as refused:
        check_options(options)
    assert set(fields) <= set(refused.value.options)
    assert "--" not in str(refused.value)


def test_decode_image_names_what_was_sent(exported):
    metadata = exported("resnet18").metadata
    with pytest.raises(InputError, match=r"cannot read image .*12 bytes, first b'not an i'"):
        decode_image(b"not an image", metadata)
    assert decode_image(jpeg(), metadata).shape == (3, 224, 224)


def test_libpython_dir_goes_first_only_for_tritonserver(monkeypatch):
    import os
    import sysconfig

    monkeypatch.setenv("LD_LIBRARY_PATH", "/somewhere")
    files = tritonserver_files()
    folders = tritonserver_environment(files, Path("/stub/bin"))["LD_LIBRARY_PATH"].split(":")
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        assert folders[0] == sysconfig.get_config_var("LIBDIR")
    assert str(files.libraries) in folders and folders[-1] == "/somewhere"
    assert os.environ["LD_LIBRARY_PATH"] == "/somewhere"  # this process's own is untouched


def test_log_cause_skips_the_noise():
    log = (
        'E1130 04:30:19.986 1 model_repository_manager.cc:470] "Failed to set config '
        'modification time: model_config_content_name_ is empty"\n'
        "E1130 04:30:20.000 1 model_lifecycle.cc:1] \"failed to load 'resnet18': boom\"\n"
    )
    assert log_cause(log) == "failed to load 'resnet18': boom"
    # What this machine logs when the stub loads the system's libpython (seen with the fix off).
    stub = (
        'E1130 04:59:01.1 1 backend_model.cc:1] "ERROR: Failed to create instance: '
        "TritonModelException: Model initialize error: Traceback (most recent call last):\\n"
        '  File \\"x.py\\", line 100, in ensure_running\\n    if self._lock._recursion_count() '
        "> 1:\\nAttributeError: '_thread.RLock' object has no attribute '_recursion_count'\\n"
        '\\n\\nAt:\\n  /tmp/f/1/model.py(454): initialize\\n"\n'
    )
    cause = log_cause(stub)
    assert cause.startswith("ERROR: Failed to create instance: TritonModelException: Model init")
    assert "AttributeError: '_thread.RLock' object has no attribute '_recursion_count'" in cause
    assert "another libpython" in cause and "\n" not in cause and "Traceback" not in cause
    assert log_cause("I1130 all good\n") is None


@pytest.mark.slow
def test_sigterm_while_starting_stops_cleanly(r18):
    """A signal before the models are ready ends the start: exit 130, nothing left behind."""
    http, grpc, metrics = (str(p) for p in free_ports(3))
    args = ["--http-port", http, "--grpc-port", grpc, "--metrics-port", metrics]
    server = ServedProcess(
        subprocess.Popen(serve_command(r18, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE),
        "resnet18",
        None,
        int(http),
        int(grpc),
        int(metrics),
        Path("."),
    )
    deadline = time.monotonic() + 120
    while not descendants(server.pid):  # tritonserver is being started
        assert server.process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    server.record_resources()
    server.process.send_signal(signal.SIGTERM)
    try:
        _, err = server.process.communicate(timeout=90)
    finally:
        stop_server(server, signal.SIGKILL)
    assert server.process.returncode == 130, err.decode()[-2000:]
    assert "Traceback" not in err.decode()
    alive, segments = leftovers(server)
    assert not alive and not segments, (alive, segments)


def test_repository_carries_the_session_settings(r18, tmp_path):
    """What each stub is told: the file, its session settings, its kind, Triton's batching."""
    options = ServeOptions(threads=1, instances=2, max_queue_size=7, top_k=3)
    repo = ModelServer(r18, options).write_repository(tmp_path / "models")
    tensor = parse_config((repo / "resnet18" / "config.pbtxt").read_text())
    image = parse_config((repo / "resnet18_image" / "config.pbtxt").read_text())
    for config, kind in ((tensor, "tensor"), (image, "image")):
        assert not config.parameters  # the server's paths are not for clients to read
        values = json.loads((repo / config.name / "1" / "instance.json").read_text())
        assert values["model_path"] == str(r18.resolve()) and values["kind"] == kind
        assert values["packages"] == imported_packages()
        session = values["session"]
        assert session["intra_op_threads"] == 1
        assert session["session_config_entries"] == {SPINNING: "0"}  # serve's default

        assert config.backend == "python" and not config.platform
        assert config.instance_group[0].count == 2
        assert config.dynamic_batching.default_queue_policy.max_queue_size == 7
        source = (repo / config.name / "1" / "model.py").read_text()
        assert "from resnet_deploy.serving.backend import TritonPythonModel" in source
    assert [o.name for o in image.output] == ["classes", "class_indices", "probabilities", "error"]
    assert list(image.output[0].dims) == [3] and image.max_batch_size == tensor.max_batch_size
    labels = (repo / "resnet18" / "labels.txt").read_text().splitlines()
    assert labels == list(imagenet_classes())
    spinning = ModelServer(r18, ServeOptions(spin=True)).write_repository(tmp_path / "spin")
    session = json.loads((spinning / "resnet18" / "1" / "instance.json").read_text())["session"]
    assert session["session_config_entries"] == {SPINNING: "1"}


class Launched(Exception):
    """Raised in place of starting tritonserver: everything before it has run."""


def test_serve_reads_the_model_file_once(r18, monkeypatch):
    """Config, int8 target check and the checked session all come from one read of the file."""
    reads = count_model_reads(monkeypatch)
    launched = []

    def launch(files, repository, *args, **kwargs):
        launched.append(repository)
        raise Launched

    monkeypatch.setattr(server_module, "launch_tritonserver", launch)
    http, grpc, metrics = free_ports(3)
    options = ServeOptions(http_port=http, grpc_port=grpc, metrics_port=metrics)
    with pytest.raises(Launched):
        ModelServer(r18, options).start()
    assert launched and reads == [r18]
