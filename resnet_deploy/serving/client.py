"""A model served over KServe's v2 protocol (Triton, PyTriton, KServe), seen through tritonclient.

One client code for HTTP and gRPC: the model's input name, datatype and dims come from the
endpoint's own metadata and config, so it works against our ``serve``, a Triton serving the
``triton`` repository, or any v2 endpoint. Tensors travel as binary data (HTTP's JSON encoding
is about ten times slower). Every call has a time limit, and load is sent by a fixed number of
threads, each with its own client (tritonclient's clients are not shared between threads), so
that many requests are in flight while every loop stays bounded in count and time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from resnet_deploy.errors import InputError, ResnetDeployError

SCHEMES = ("http", "grpc")
DEFAULT_TIMEOUT_S = 30.0  # any one call: connecting, metadata, one inference
DATATYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}
IMAGE_MODEL_SUFFIX = "_image"  # serve's companion model, which takes encoded images


@dataclass(frozen=True)
class EndpointOptions:
    url: str  # grpc://HOST:PORT or http://HOST:PORT
    model_name: str | None = None  # None: the one tensor model the endpoint serves
    model_version: str = ""  # "": the server's choice
    concurrency: int | None = None  # requests in flight, one thread and client each; None: 1
    # for bench, 16 for LoadGen
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class EndpointModel:
    """What the endpoint says about the model, as the client needs it."""

    url: str
    protocol: str  # http or grpc
    address: str  # HOST:PORT
    server: str  # "triton 2.51.0", as the server names itself
    name: str
    version: str
    platform: str
    input_name: str
    input_datatype: str  # KServe's name: FP32, FP16
    dims: tuple[int, ...]  # per sample, without the batch dimension
    output_name: str
    max_batch_size: int  # 0: the server does not batch; the model takes one fixed shape
    fixed_batch: int | None  # that shape's batch when max_batch_size is 0
    batch_dim: bool = True  # False: that shape is one sample, without a batch dimension

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(DATATYPES[self.input_datatype])

    @property
    def image_size(self) -> int:
        return int(self.dims[-1])


def parse_url(url: str) -> tuple[str, str]:
    """``grpc://HOST:PORT`` -> ("grpc", "HOST:PORT"); anything else is a one-line InputError."""
    parts = urlsplit(url.strip())
    usage = f"endpoint URL {url}: use grpc://HOST:PORT or http://HOST:PORT"
    if parts.scheme not in SCHEMES or not parts.hostname or parts.path not in ("", "/"):
        raise InputError(usage)
    try:
        port = parts.port
    except ValueError:
        raise InputError(usage) from None
    if port is None:
        raise InputError(f"{usage} (the port is missing)")
    return parts.scheme, parts.netloc


def check_endpoint(options: EndpointOptions) -> tuple[str, str]:
    """The cheap checks, before any connection; returns the protocol and HOST:PORT."""
    if options.concurrency is not None and options.concurrency < 1:
        raise InputError(f"concurrency must be at least 1, got {options.concurrency}")
    if not options.timeout_s > 0:
        raise InputError(f"the request timeout must be positive, got {options.timeout_s}")
    return parse_url(options.url)


class ModelClient:
    """One connection to the endpoint, for one thread: place a batch, then infer it."""

    def __init__(self, model: EndpointModel, timeout_s: float):
        self.model = model
        self.timeout_s = timeout_s
        self.client = open_client(model.protocol, model.address, timeout_s)
        self.module = protocol_module(model.protocol)
        self.outputs = [self.module.InferRequestedOutput(model.output_name, **self._binary())]

    def __enter__(self) -> ModelClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def place(self, batch: np.ndarray) -> list[Any]:
        """The request's input, serialized once, so that a timed loop times the network."""
        model = self.model
        array = np.ascontiguousarray(batch if model.batch_dim else batch[0], dtype=model.dtype)
        tensor = self.module.InferInput(model.input_name, list(array.shape), model.input_datatype)
        tensor.set_data_from_numpy(array, **self._binary())
        return [tensor]

    def infer(self, feed: list[Any]) -> np.ndarray:
        """The model's output for a placed batch; any failure is a one-line ResnetDeployError."""
        model = self.model
        limit = {"client_timeout": self.timeout_s} if model.protocol == "grpc" else {}
        try:
            result = self.client.infer(
                model.name, feed, model_version=model.version, outputs=self.outputs, **limit
            )
        except Exception as exc:
            raise ResnetDeployError(f"{model.url} {model.name}: {_why(exc)}") from None
        output = result.as_numpy(model.output_name)
        return output if model.batch_dim else output[None]

    def _binary(self) -> dict[str, bool]:
        return {"binary_data": True} if self.model.protocol == "http" else {}


def connect(options: EndpointOptions, *, default_name: str | None = None) -> EndpointModel:
    """Reach the endpoint and read the model's metadata and config, or say in one line why not.

    The model is ``options.model_name``, else ``default_name`` (the arch of a model file given
    beside the URL), else the one tensor model the endpoint serves.
    """
    protocol, address = check_endpoint(options)
    client = open_client(protocol, address, options.timeout_s)
    try:
        server = _call(client, options, "get_server_metadata")
        name = options.model_name or default_name or _only_model(client, options)
        version = options.model_version
        try:
            metadata = _call(client, options, "get_model_metadata", name, version)
        except ResnetDeployError as exc:
            if "unknown model" not in str(exc).lower() and "not found" not in str(exc).lower():
                raise
            served = ", ".join(_served(client, options))
            listed = f" (it serves: {served})" if served else ""
            raise InputError(f"{options.url}: no model {name!r}{listed}") from None
        if not _call(client, options, "is_model_ready", name, version):
            raise ResnetDeployError(f"{options.url}: model {name!r} is not ready")
        config = _call(client, options, "get_model_config", name, version)
    finally:
        client.close()
    config = config.get("config", config)  # gRPC's JSON wraps it
    return _describe(options, protocol, address, server, metadata, config)


def time_requests(
    model: EndpointModel,
    batch: np.ndarray,
    *,
    concurrency: int,
    timeout_s: float,
    runs: int | None = None,
    seconds: float | None = None,
) -> tuple[list[float], float]:
    """Each request's seconds and the wall time: ``concurrency`` clients in a closed loop, each
    sending its next request when the last is answered, until ``runs`` requests in all or
    ``seconds`` have passed (a request that would start later is not sent)."""
    if runs is None and seconds is None:
        raise ValueError("give runs or seconds")
    times: list[float] = []
    errors: list[Exception] = []
    issued = [0]
    lock = threading.Lock()
    clients = [ModelClient(model, timeout_s) for _ in range(concurrency)]
    feeds = [client.place(batch) for client in clients]
    start = time.perf_counter()
    deadline = start + seconds if seconds is not None else None

    def loop(client: ModelClient, feed: list[Any]) -> None:
        while not errors:
            with lock:
                if runs is not None and issued[0] >= runs:
                    return
                issued[0] += 1
            begin = time.perf_counter()
            if deadline is not None and begin >= deadline:
                return
            try:
                client.infer(feed)
            except Exception as exc:
                errors.append(exc)
                return
            with lock:
                times.append(time.perf_counter() - begin)

    threads = [
        threading.Thread(target=loop, args=pair, daemon=True)
        for pair in zip(clients, feeds, strict=True)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for client in clients:
            client.__exit__()
    if errors:
        raise errors[0]
    return times, time.perf_counter() - start


def _describe(
    options: EndpointOptions,
    protocol: str,
    address: str,
    server: dict,
    metadata: dict,
    config: dict,
) -> EndpointModel:
    url = options.url
    name = metadata["name"]
    inputs, outputs = metadata.get("inputs", []), metadata.get("outputs", [])
    if len(inputs) != 1 or not outputs:
        raise InputError(
            f"{url}: model {name!r} has {len(inputs)} inputs; expected one image batch"
        )
    tensor = inputs[0]
    datatype = tensor["datatype"]
    if datatype not in DATATYPES:
        kinds = ", ".join(DATATYPES)
        raise InputError(f"{url}: model {name!r} takes {datatype}; this client sends {kinds}")
    shape = tuple(int(d) for d in tensor["shape"])
    max_batch = int(config.get("max_batch_size", 0) or 0)
    batch_dim, fixed, dims = True, None, shape[1:]
    if not max_batch and len(shape) == 3:  # one sample per request
        batch_dim, fixed, dims = False, 1, shape
    elif not max_batch:
        fixed = shape[0]
    if len(shape) - batch_dim != 3 or min(dims) < 1 or dims[1] != dims[2] or (fixed or 1) < 1:
        raise InputError(f"{url}: model {name!r} takes {list(shape)}; expected N x C x S x S")
    return EndpointModel(
        url=url,
        protocol=protocol,
        address=address,
        server=f"{server.get('name', 'server')} {server.get('version', '')}".strip(),
        name=name,
        version=options.model_version,
        platform=metadata.get("platform", ""),
        input_name=tensor["name"],
        input_datatype=datatype,
        dims=dims,
        output_name=outputs[0]["name"],
        max_batch_size=max_batch,
        fixed_batch=fixed,
        batch_dim=batch_dim,
    )


def _served(client: Any, options: EndpointOptions) -> list[str]:
    """The models the endpoint lists, [] where it does not (PyTriton and KServe restrict it)."""
    try:
        index = _call(client, options, "get_model_repository_index")
    except ResnetDeployError:
        return []
    entries = index.get("models", []) if isinstance(index, dict) else index
    return sorted({entry["name"] for entry in entries})


def _only_model(client: Any, options: EndpointOptions) -> str:
    """The one tensor model served (serve's ``<name>_image`` companion aside)."""
    served = _served(client, options)
    tensor_models = [
        name
        for name in served
        if not (name.endswith(IMAGE_MODEL_SUFFIX) and name[: -len(IMAGE_MODEL_SUFFIX)] in served)
    ]
    if len(tensor_models) == 1:
        return tensor_models[0]
    listed = f"serves {', '.join(served)}" if served else "does not list its models"
    raise InputError(f"{options.url} {listed}: name the model to use", options=["model_name"])


def _call(client: Any, options: EndpointOptions, method: str, *args: Any) -> Any:
    grpc = options.url.strip().startswith("grpc")
    extra = {"client_timeout": options.timeout_s} if grpc else {}
    if grpc and method != "is_model_ready":
        extra["as_json"] = True
    try:
        return getattr(client, method)(*args, **extra)
    except Exception as exc:
        raise ResnetDeployError(f"{options.url}: {_why(exc)}") from None


def _why(exc: Exception) -> str:
    """The first line of a client error, with connection failures said plainly."""
    text = str(exc).strip().partition("\n")[0] or type(exc).__name__
    lowered = text.lower()
    if isinstance(exc, (ConnectionError, OSError)) or any(
        key in lowered for key in ("unavailable", "connection refused", "failed to connect")
    ):
        return f"cannot reach the server ({text})"
    if "deadline" in lowered or "timed out" in lowered or "timeout" in lowered:
        return f"no answer in time ({text})"
    return text


def protocol_module(protocol: str) -> Any:
    """tritonclient's module for ``protocol``: both have the same InferInput and client API."""
    if protocol == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


def open_client(protocol: str, address: str, timeout_s: float) -> Any:
    """A tritonclient client for ``HOST:PORT``; gRPC's time limit is given per call."""
    module = protocol_module(protocol)
    if protocol == "grpc":
        return module.InferenceServerClient(address)
    return module.InferenceServerClient(
        address, connection_timeout=timeout_s, network_timeout=timeout_s
    )
