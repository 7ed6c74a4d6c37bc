"""``bench --url`` and ``bench --scenario --url`` against a real `resnet-deploy serve` process.

One server (ResNet18) for the module, on free loopback ports, stopped by its PID. Every loop is
bounded by ``--iterations`` / LoadGen's minimum counts, and every request by the client's
timeout. Nothing asserts a time: the machine is shared.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serving import ServedProcess, free_ports, running_server

from resnet_deploy.data.images import load_batch
from resnet_deploy.errors import InputError
from resnet_deploy.perf.loadgen import ScenarioOptions, run_scenario
from resnet_deploy.runtime.providers import SessionConfig, create_session
from resnet_deploy.serving.client import EndpointOptions, ModelClient, connect
from tests.helpers import ATOL, RTOL, cli

pytest.importorskip("pytriton")

LOOP = ["--warmup", "1", "--iterations", "3"]  # a handful of requests per batch size


@pytest.fixture(scope="module")
def server(r18: Path) -> Iterator[ServedProcess]:
    with running_server(r18) as served:
        yield served


def url(server: ServedProcess, protocol: str) -> str:
    port = server.grpc_port if protocol == "grpc" else server.http_port
    return f"{protocol}://127.0.0.1:{port}"


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_client_reads_the_model_and_answers_as_in_process(
    server: ServedProcess, r18: Path, protocol: str
) -> None:
    model = connect(EndpointOptions(url(server, protocol), model_name="resnet18"))
    assert (model.input_name, model.input_datatype, model.dims) == ("input", "FP32", (3, 224, 224))
    assert model.output_name == "logits" and model.max_batch_size == 32
    batch = np.random.default_rng(3).standard_normal((3, 3, 224, 224)).astype(np.float32)
    with ModelClient(model, timeout_s=60) as client:
        served = client.infer(client.place(batch))
    session = create_session(r18, SessionConfig())
    local = session.run(None, {"input": batch})[0]
    np.testing.assert_allclose(served, local, atol=ATOL, rtol=RTOL)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bench_url_gives_the_bench_report(server: ServedProcess, protocol: str) -> None:
    args = ["--url", url(server, protocol), "--model-name", "resnet18", "--batch-sizes", "1,2"]
    result = cli("bench", *args, *LOOP, "--concurrency", 2, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["model"]["name"] == "resnet18" and record["model"]["protocol"] == protocol
    assert record["concurrency"] == 2 and record["in_process"] is None
    assert [b["batch_size"] for b in record["batches"]] == [1, 2]
    for b in record["batches"]:
        assert b["error"] is None and b["runs"] == 3
        assert 0 < b["min_ms"] <= b["p50_ms"] <= b["p99_ms"] <= b["max_ms"]
        assert b["images_per_s"] > 0 and b["first_inference_ms"] > 0

    text = cli("bench", *args, *LOOP)  # the table, for people
    assert text.exit_code == 0, text.output
    assert "resnet18" in text.stdout and "images/s" in text.stdout


@pytest.mark.slow
def test_bench_url_with_the_file_states_the_serving_overhead(
    server: ServedProcess, r18: Path
) -> None:
    # no --model-name: the file's arch names the served model, as `serve` names it
    result = cli("bench", r18, "--url", url(server, "grpc"), "--batch-sizes", "1", *LOOP, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["metadata"]["arch"] == "resnet18" and record["model_sha256"]
    assert record["in_process"]["batches"][0]["runs"] == 3
    (overhead,) = record["overhead"]
    served, local = record["batches"][0], record["in_process"]["batches"][0]
    assert overhead["overhead_p50_ms"] == pytest.approx(served["p50_ms"] - local["p50_ms"])
    assert overhead["throughput_ratio"] > 0


@pytest.mark.slow
def test_loadgen_server_scenario_drives_the_endpoint(server: ServedProcess) -> None:
    args = ["--url", url(server, "http"), "--model-name", "resnet18", "--scenario", "server"]
    short = ["--target-qps", 5, "--latency-bound-ms", 5000, "--min-duration", 1, "--min-queries", 4]
    result = cli("bench", *args, *short, "--concurrency", 4, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["scenario"] == "Server" and record["mode"] == "PerformanceOnly"
    assert record["endpoint"].endswith("resnet18") and record["concurrency"] == 4
    assert record["queries"] >= 4 and record["samples_per_s"] > 0
    assert 0 < record["p50_ms"] <= record["p99_ms"] and isinstance(record["valid"], bool)
    assert record["mean_batch_size"] == 1 and record["threads"] is None  # one request a sample


@pytest.mark.slow
def test_loadgen_accuracy_through_the_endpoint(
    server: ServedProcess, r18: Path, tmp_path: Path
) -> None:
    """Images labelled with the model's own answers: the remote SUT must answer every one."""
    rng = np.random.default_rng(1)
    paths = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (80, 70 + 20 * i, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    session = create_session(r18, SessionConfig())
    labels = session.run(None, {"input": load_batch(paths, 224)})[0].argmax(axis=1)
    for path, label in zip(paths, labels.tolist(), strict=True):
        (tmp_path / str(label)).mkdir(exist_ok=True)
        path.rename(tmp_path / str(label) / path.name)
    options = ScenarioOptions(
        scenario="offline",
        images=tmp_path,
        accuracy=True,
        max_batch=2,
        endpoint=EndpointOptions(url(server, "grpc")),
    )
    result = run_scenario(r18, options)  # the file gives the name and the preprocessing
    assert result.mode == "AccuracyOnly" and result.valid
    assert result.top1_accuracy == 1.0 and result.accuracy_samples == 3
    assert result.engine_batch_sizes and max(result.engine_batch_sizes) <= 2


@pytest.mark.slow
def test_unknown_model_unreachable_server_and_bad_url_are_one_line_errors(
    server: ServedProcess,
) -> None:
    (closed,) = free_ports(1)  # nothing listens there
    cases = [
        (["--url", url(server, "grpc"), "--model-name", "resnet99"], "no model 'resnet99'"),
        (["--url", url(server, "http"), "--model-name", "resnet99"], "no model 'resnet99'"),
        (["--url", f"http://127.0.0.1:{closed}", "--model-name", "m"], "cannot reach the server"),
        (["--url", f"grpc://127.0.0.1:{closed}", "--model-name", "m"], "cannot reach the server"),
        (["--url", "ftp://127.0.0.1:21"], "use grpc://HOST:PORT or http://HOST:PORT"),
        (["--url", "http://127.0.0.1"], "the port is missing"),
        (["--model-name", "resnet18"], "--model-name and --concurrency need --url"),
        ([], "give MODEL.onnx to bench, or --url"),
    ]
    for args, message in cases:
        failed = cli("bench", *args, *LOOP)
        assert failed.exit_code == 2, failed.output
        lines = failed.stderr.strip().splitlines()
        error = [line for line in lines if not line.startswith("...")]
        assert len(error) == 1 and error[0].startswith("Error: ") and message in error[0]
    scenario = cli("bench", "--url", "grpc://127.0.0.1:1", "--scenario", "server")
    assert scenario.exit_code == 2 and "cannot reach the server" in scenario.stderr


@pytest.mark.slow
def test_the_one_tensor_model_is_found_without_its_name(server: ServedProcess) -> None:
    """serve lists its models: the image companion aside, there is one to bench."""
    found = cli("bench", "--url", url(server, "http"), "--batch-sizes", "1", *LOOP)
    assert found.exit_code == 0, found.output
    assert "resnet18: triton" in found.output


class ListingClient:
    """A KServe v2 client whose server lists ``names`` (only the call the choice makes)."""

    def __init__(self, names: list[str]):
        self.names = names

    def get_model_repository_index(self) -> list[dict[str, str]]:
        return [{"name": name} for name in self.names]


@pytest.mark.parametrize(
    ("names", "found"),
    [
        (["resnet50", "resnet50_image"], "resnet50"),
        (["resnet50"], "resnet50"),
        (["resnet50_image"], "resnet50_image"),  # no companion: an image model alone is the one
        (["a", "b"], None),
        (["a", "a_image", "b"], None),
        ([], None),
    ],
)
def test_only_model_needs_exactly_one_tensor_model(names: list[str], found: str | None) -> None:
    from resnet_deploy.serving.client import _only_model

    options = EndpointOptions(url="http://127.0.0.1:1")
    if found is not None:
        assert _only_model(ListingClient(names), options) == found
        return
    with pytest.raises(InputError, match="name the model to use") as raised:
        _only_model(ListingClient(names), options)
    assert ("does not list its models" in str(raised.value)) == (not names)
    assert raised.value.options == ("model_name",)
