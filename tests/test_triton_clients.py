"""Triton's own example clients against `serve`: their checks and their flow, in our code.

``image_client.py`` and ``grpc_image_client.py`` (triton-inference-server/client,
``src/python/examples``) are what people try first. They read the model's metadata and config,
refuse a model that is not an image classifier laid out as they expect, resize and scale a
picture themselves, and ask for the top classes through Triton's classification extension.
The tests cannot fetch those scripts offline, so they repeat each check the scripts make and
the requests they send; the answers are compared with ONNX Runtime in process on the very
tensor sent. ``simple_http_infer_client.py``'s ways of sending a tensor are checked too.
"""

from __future__ import annotations

import queue
import struct
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from PIL import Image
from serving import (  # tests/ is on sys.path under pytest's default import mode
    CLIENT_TIMEOUT_S,
    ServedProcess,
    in_process,
    jpeg,
    running_server,
)
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2, service_pb2_grpc

pytest.importorskip("pytriton", reason="serve needs the [serve] extra (PyTriton)")

from resnet_deploy.model.labels import imagenet_classes
from resnet_deploy.serving.config import TensorSpec, TritonOptions, build_config, resolve_batching

ATOL = 1e-4  # the same ONNX Runtime on the same tensor; batching may change summation order
SCORE_DIGITS = 1e-6  # Triton prints a class's score with six decimals
CLASSES = 3  # the clients' -c
NCHW, NHWC = mc.ModelInput.FORMAT_NCHW, mc.ModelInput.FORMAT_NHWC


@pytest.fixture(scope="module")
def server(r18: Path):
    with running_server(r18) as server:
        yield server


@pytest.fixture(scope="module")
def logits(r18: Path):
    """ONNX Runtime in process: the logits of a batch, to compare served answers with."""
    return in_process(r18)


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Two JPEG files of seeded noise, of other sizes than the model's (the clients resize)."""
    paths = [tmp_path / "a.jpg", tmp_path / "b.jpg"]
    for seed, (path, size) in enumerate(zip(paths, [(320, 240), (150, 200)], strict=True)):
        path.write_bytes(jpeg(seed, size))
    return paths


@dataclass(frozen=True)
class ImageModel:
    """What the example clients take from the metadata and config to build their request."""

    max_batch_size: int
    input_name: str
    output_name: str
    channels: int
    height: int
    width: int
    layout: int  # mc.ModelInput.Format
    datatype: str


def image_model(metadata: service_pb2.ModelMetadataResponse, config: mc.ModelConfig) -> ImageModel:
    """Every check ``parse_model`` in the example clients makes, in the same order; an
    AssertionError says which one a model fails."""
    assert len(metadata.inputs) == 1, f"expecting 1 input, got {len(metadata.inputs)}"
    assert len(metadata.outputs) == 1, f"expecting 1 output, got {len(metadata.outputs)}"
    assert len(config.input) == 1, f"expecting 1 config input, got {len(config.input)}"
    tensor, output, configured = metadata.inputs[0], metadata.outputs[0], config.input[0]
    assert output.datatype == "FP32", f"expecting output datatype FP32, got {output.datatype}"
    batched = config.max_batch_size > 0
    output_dims = list(output.shape)[1 if batched else 0 :]
    assert sum(d > 1 for d in output_dims) <= 1, f"expecting a vector output, got {output_dims}"
    dims = list(tensor.shape)[1 if batched else 0 :]
    assert len(dims) == 3, f"expecting input to have {3 + batched} dims, got {list(tensor.shape)}"
    layout = mc.ModelInput.Format.Name(configured.format)
    assert configured.format in (NCHW, NHWC), f"unexpected input format {layout}"
    channels, height, width = dims if configured.format == NCHW else (dims[2], *dims[:2])
    return ImageModel(
        config.max_batch_size,
        tensor.name,
        output.name,
        channels,
        height,
        width,
        configured.format,
        tensor.datatype,
    )


def http_model(client: httpclient.InferenceServerClient, name: str) -> ImageModel:
    """Over HTTP the clients get JSON; as protobuf messages, the JSON must hold the same
    fields (``format`` as its enum name) that the gRPC answer does."""
    metadata = json_format.ParseDict(
        client.get_model_metadata(name), service_pb2.ModelMetadataResponse()
    )
    config = json_format.ParseDict(client.get_model_config(name), mc.ModelConfig())
    return image_model(metadata, config)


def grpc_model(client: grpcclient.InferenceServerClient, name: str) -> ImageModel:
    return image_model(client.get_model_metadata(name), client.get_model_config(name).config)


def client_pixels(path: Path, model: ImageModel) -> np.ndarray:
    """The clients' preprocessing with ``-s INCEPTION``: the picture resized (bilinear, no
    crop) to the model's size, as RGB, scaled to [-1, 1], channels where the layout says.

    INCEPTION is the closest of the clients' three scalings to the ImageNet mean and std the
    model was trained with (the clients cannot apply those); it changes the answer, not the
    comparison, which is made on the tensor sent.
    """
    image = Image.open(path).convert("L" if model.channels == 1 else "RGB")
    pixels = np.asarray(image.resize((model.width, model.height), Image.BILINEAR))
    pixels = pixels.reshape(model.height, model.width, model.channels)
    scaled = pixels.astype(np.float32) / np.float32(127.5) - np.float32(1)
    return scaled.transpose(2, 0, 1) if model.layout == NCHW else scaled


def check_classes(rows: np.ndarray, batch: np.ndarray, logits) -> None:
    """Each row holds ``CLASSES`` "score:index:label" entries: ONNX Runtime's top classes on
    the same tensor, best first, with their logits and ImageNet names."""
    expected = logits(batch)
    names = imagenet_classes()
    assert rows.shape == (len(batch), CLASSES)
    for row, reference in zip(rows, expected, strict=True):
        entries = [(entry.decode() if isinstance(entry, bytes) else entry) for entry in row]
        parsed = [entry.split(":", 2) for entry in entries]
        indices = [int(index) for _, index, _ in parsed]
        assert indices == list(np.argsort(-reference, kind="stable")[:CLASSES])
        assert [label for _, _, label in parsed] == [names[i] for i in indices]
        scores = [float(score) for score, _, _ in parsed]
        np.testing.assert_allclose(scores, reference[indices], atol=ATOL + SCORE_DIGITS, rtol=0)


def bytes_tensor(raw: bytes) -> list[bytes]:
    """Triton's BYTES encoding: each element as a 4-byte little-endian length, then its bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        (size,) = struct.unpack_from("<I", raw, offset)
        elements.append(raw[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return elements


def our_model() -> tuple[service_pb2.ModelMetadataResponse, mc.ModelConfig]:
    """The metadata Triton reports and the config `serve` and `triton` write for our exports."""
    tensors = [TensorSpec("input", "TYPE_FP32", (-1, 3, 224, 224))]
    outputs = [TensorSpec("logits", "TYPE_FP32", (-1, 1000))]
    options = TritonOptions(repo=Path("."))
    batching = resolve_batching(options, tensors, outputs)
    config = build_config("m", tensors, outputs, options, *batching, labelled={"logits"})
    metadata = service_pb2.ModelMetadataResponse(name="m", versions=["1"])
    metadata.inputs.add(name="input", datatype="FP32", shape=tensors[0].shape)
    metadata.outputs.add(name="logits", datatype="FP32", shape=outputs[0].shape)
    return metadata, config


def test_our_config_passes_the_checks_that_refuse_others() -> None:
    assert image_model(*our_model()) == ImageModel(32, "input", "logits", 3, 224, 224, NCHW, "FP32")


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (lambda m, c: c.input[0].ClearField("format"), "unexpected input format FORMAT_NONE"),
        (lambda m, c: setattr(m.outputs[0], "datatype", "FP16"), "output datatype FP32"),
        (lambda m, c: m.outputs[0].shape.insert(1, 10), "a vector output"),
        (lambda m, c: m.inputs[0].shape.pop(), "input to have 4 dims"),
        (lambda m, c: m.outputs.add(name="extra"), "expecting 1 output, got 2"),
    ],
    ids=["format", "datatype", "matrix", "dims", "outputs"],
)
def test_the_checks_refuse_what_the_clients_refuse(change, refusal: str) -> None:
    metadata, config = our_model()
    change(metadata, config)
    with pytest.raises(AssertionError, match=refusal):
        image_model(metadata, config)


# --- image_client.py -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc", "grpc-streaming"])
def test_image_client_flow_classifies_a_jpeg(server: ServedProcess, images, logits, protocol):
    """image_client.py -m resnet18 -c 3 -s INCEPTION -b 2 [-i grpc [--streaming]] DIR."""
    if protocol == "http":
        client = httpclient.InferenceServerClient(
            server.http_address, network_timeout=CLIENT_TIMEOUT_S
        )
        module, model = httpclient, http_model(client, server.name)
    else:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        module, model = grpcclient, grpc_model(client, server.name)
    try:
        assert model == ImageModel(32, "input", "logits", 3, 224, 224, NCHW, "FP32")
        batch = np.stack([client_pixels(path, model) for path in sorted(images)])
        tensor = module.InferInput(model.input_name, list(batch.shape), model.datatype)
        tensor.set_data_from_numpy(batch)
        output = module.InferRequestedOutput(model.output_name, class_count=CLASSES)
        if protocol == "grpc-streaming":
            answers: queue.Queue = queue.Queue()
            client.start_stream(lambda result, error: answers.put((result, error)))
            try:
                client.async_stream_infer(server.name, [tensor], request_id="1", outputs=[output])
                result, error = answers.get(timeout=CLIENT_TIMEOUT_S)
            finally:
                client.stop_stream()
            assert error is None, error
        elif protocol == "grpc":
            result = client.infer(
                server.name,
                [tensor],
                request_id="1",
                outputs=[output],
                client_timeout=CLIENT_TIMEOUT_S,
            )
        else:
            result = client.infer(server.name, [tensor], request_id="1", outputs=[output])
        response = result.get_response()
        assert (response.id if protocol != "http" else response["id"]) == "1"
        check_classes(result.as_numpy(model.output_name), batch, logits)
    finally:
        client.close()


@pytest.mark.slow
def test_the_image_model_is_not_for_the_example_clients(server: ServedProcess):
    """`<name>_image` takes encoded files, not pixels: the clients refuse it, and say why."""
    client = grpcclient.InferenceServerClient(server.grpc_address)
    try:
        with pytest.raises(AssertionError, match="expecting 1 output, got 4"):
            grpc_model(client, server.image_name)
    finally:
        client.close()


# --- grpc_image_client.py --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "streaming"])
def test_grpc_image_client_flow_with_raw_stubs(server: ServedProcess, images, logits, streaming):
    """grpc_image_client.py: the service stubs, pixels as raw_input_contents, classification
    as an output parameter, the answer decoded from raw_output_contents."""
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        metadata = stub.ModelMetadata(
            service_pb2.ModelMetadataRequest(name=server.name, version=""), timeout=CLIENT_TIMEOUT_S
        )
        config = stub.ModelConfig(
            service_pb2.ModelConfigRequest(name=server.name, version=""), timeout=CLIENT_TIMEOUT_S
        ).config
        model = image_model(metadata, config)
        pixels = [client_pixels(path, model) for path in sorted(images)]

        request = service_pb2.ModelInferRequest(model_name=server.name, model_version="")
        output = request.outputs.add(name=model.output_name)
        output.parameters["classification"].int64_param = CLASSES
        shape = [len(pixels), *pixels[0].shape]  # in the layout the config declares
        request.inputs.add(name=model.input_name, datatype=model.datatype, shape=shape)
        request.raw_input_contents.append(b"".join(p.tobytes() for p in pixels))
        if streaming:
            (answer,) = list(stub.ModelStreamInfer(iter([request]), timeout=CLIENT_TIMEOUT_S))
            assert answer.error_message == ""
            response = answer.infer_response
        else:
            response = stub.ModelInfer(request, timeout=CLIENT_TIMEOUT_S)

    assert len(response.outputs) == len(response.raw_output_contents) == 1
    assert (response.outputs[0].datatype, list(response.outputs[0].shape)) == (
        "BYTES",
        [len(pixels), CLASSES],
    )
    rows = np.array(bytes_tensor(response.raw_output_contents[0]), dtype=object)
    check_classes(rows.reshape(len(pixels), CLASSES), np.stack(pixels), logits)


# --- simple_http_infer_client.py -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("binary_input", "binary_output", "compression"),
    [(False, True, None), (True, False, None), (True, True, "gzip"), (False, False, "deflate")],
)
def test_simple_http_client_ways_of_sending(
    server: ServedProcess, logits, binary_input, binary_output, compression
):
    """JSON or binary tensors each way, compressed bodies, unknown query parameters, and
    ``outputs=None`` (every output, as the client's second request asks)."""
    x = np.random.default_rng(5).standard_normal((2, 3, 224, 224), np.float32)
    client = httpclient.InferenceServerClient(server.http_address, network_timeout=CLIENT_TIMEOUT_S)
    try:
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary_input)
        common = {
            "query_params": {"test_1": 1, "test_2": 2},
            "request_compression_algorithm": compression,
            "response_compression_algorithm": compression,
        }
        output = httpclient.InferRequestedOutput("logits", binary_data=binary_output)
        named = client.infer(server.name, [tensor], outputs=[output], **common)
        every = client.infer(server.name, [tensor], outputs=None, **common)
    finally:
        client.close()
    for result in (named, every):
        assert [o["name"] for o in result.get_response()["outputs"]] == ["logits"]
        np.testing.assert_allclose(result.as_numpy("logits"), logits(x), atol=ATOL, rtol=0)
