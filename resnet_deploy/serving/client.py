"""A model served over KServe's v2 protocol (Triton, PyTriton, KServe), seen through tritonclient.

One client code for HTTP and gRPC: the model's input name, datatype and dims come from the
endpoint's own metadata and config, so it works against our ``serve``, a Triton serving the
``triton`` repository, or any v2 endpoint. Tensors travel as binary data (HTTP's JSON encoding
is about ten times slower). Every call has a time limit, and load is sent by a fixed number of
threads, each with its own client (tritonclient's clients are not shared between threads), so
that many requests are in flight while every loop stays bounded in count and time.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from resnet_deploy.errors import InputError, ResnetDeployError
from resnet_deploy.model.metadata import MAX_BATCH, MAX_IMAGE_SIZE

SCHEMES = ("http", "grpc")
DEFAULT_TIMEOUT_S = 30.0  # any one call: connecting, metadata, one inference
DATATYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64}
IMAGE_MODEL_SUFFIX = "_image"  # serve's companion model, which takes encoded images
MAX_CHANNELS = 16  # an image batch's channels; more is not an image model
MAX_DIMS = 8  # no tensor of an image classifier has more
SHOWN_CHARS = 80  # what a message quotes of a value the server sent
HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9._-]*[a-z0-9_.])?")
INTEGER = re.compile(r"-?[0-9]{1,18}")  # gRPC's JSON spells int64 as a string


class BadAnswer(ResnetDeployError):
    """The server answered a request, but not with what its metadata declares: the benchmark
    stops, since timing such answers measures nothing."""


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
    output_datatype: str
    output_dims: tuple[int, ...]  # per sample, as declared; -1: any size
    max_batch_size: int  # 0: the server does not batch; the model takes one fixed shape
    fixed_batch: int | None  # that shape's batch when max_batch_size is 0
    batch_dim: bool = True  # False: that shape is one sample, without a batch dimension

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(DATATYPES[self.input_datatype])

    @property
    def image_size(self) -> int:
        return int(self.dims[-1])


def redact_url(url: object) -> str:
    """``url`` as every message shows it: anything before an ``@`` (a user and password) as
    ``***``, control characters as ``?``, and no longer than a line."""
    text = str(url).strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return _printable(scheme + sep + rest, limit=200)


def parse_url(url: str) -> tuple[str, str]:
    """``grpc://HOST:PORT`` -> ("grpc", "HOST:PORT"); anything else is a one-line InputError."""
    shown = redact_url(url)
    usage = f"endpoint URL {shown}: use grpc://HOST:PORT or http://HOST:PORT"
    if not isinstance(url, str):
        raise InputError(usage)
    if "@" in url:  # userinfo; no message may show it, and the client would not send it
        raise InputError(f"{usage} (credentials in the URL are not supported)")
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:  # unbalanced brackets, an IPv6 address that is not one, a bad port
        raise InputError(f"{usage} (the host or port cannot be read)") from None
    if parts.scheme not in SCHEMES or not host or parts.path not in ("", "/"):
        raise InputError(usage)
    if parts.query or parts.fragment or parts.netloc.endswith(":"):
        raise InputError(usage)
    if port is None:
        raise InputError(f"{usage} (the port is missing)")
    if not 1 <= port <= 65535:
        raise InputError(f"{usage} (port {port} is not from 1 to 65535)")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InputError(f"{usage} (the host is not an IPv6 address)") from None
        return parts.scheme, f"[{host}]:{port}"
    if not HOST_NAME.fullmatch(host):
        raise InputError(f"{usage} (the host is not a host name or IP address)")
    return parts.scheme, f"{host}:{port}"


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
        """The model's output for a placed batch, checked against the metadata; any failure is a
        one-line ResnetDeployError (BadAnswer where the server answered something unusable)."""
        model = self.model
        limit = {"client_timeout": self.timeout_s} if model.protocol == "grpc" else {}
        try:
            result = self.client.infer(
                model.name, feed, model_version=model.version, outputs=self.outputs, **limit
            )
        except Exception as exc:
            error = BadAnswer if _garbled(exc) else ResnetDeployError
            raise error(f"{model.url} {model.name}: {_why(exc)}") from None
        rows = int(feed[0].shape()[0]) if model.batch_dim else 1
        output = _answer(model, result, rows)
        return output if model.batch_dim else output[None]

    def _binary(self) -> dict[str, bool]:
        return {"binary_data": True} if self.model.protocol == "http" else {}


def connect(options: EndpointOptions, *, default_name: str | None = None) -> EndpointModel:
    """Reach the endpoint and read the model's metadata and config, or say in one line why not.

    The model is ``options.model_name``, else ``default_name`` (the arch of a model file given
    beside the URL), else the one tensor model the endpoint serves.
    """
    protocol, address = check_endpoint(options)
    url = redact_url(options.url)
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
            served = _listed(_served(client, options))
            listed = f" (it serves: {served})" if served else ""
            raise InputError(f"{url}: no model {_printable(name)!r}{listed}") from None
        if not _call(client, options, "is_model_ready", name, version):
            raise ResnetDeployError(f"{url}: model {_printable(name)!r} is not ready")
        config = _call(client, options, "get_model_config", name, version)
    finally:
        client.close()
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
    with ExitStack() as stack:
        clients = [stack.enter_context(ModelClient(model, timeout_s)) for _ in range(concurrency)]
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
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    return times, time.perf_counter() - start


def _describe(
    options: EndpointOptions,
    protocol: str,
    address: str,
    server: Any,
    metadata: Any,
    config: Any,
) -> EndpointModel:
    """The model as the endpoint declares it, every field checked: an InputError naming what
    the server sent for anything this client cannot use."""
    url = redact_url(options.url)
    metadata = _record(metadata, f"{url}: the model metadata")
    name = _text(metadata, "name", f"{url}: the model metadata")
    where = f"{url}: model {name!r}"
    config = _record(config, f"{where}: the config")
    config = _record(config.get("config", config), f"{where}: the config")  # gRPC's JSON wraps it
    inputs = _tensors(metadata, "inputs", where)
    outputs = _tensors(metadata, "outputs", where)
    if len(inputs) != 1 or not outputs:
        raise InputError(
            f"{where} has {len(inputs)} inputs and {len(outputs)} outputs; expected one image "
            "batch in and at least one output"
        )
    (tensor,) = inputs
    datatype = _datatype(tensor, f"{where}: input {tensor['name']!r} takes", "sends")
    output_datatype = _datatype(outputs[0], f"{where}: output {outputs[0]['name']!r} is", "reads")
    shape = _shape(tensor, f"{where}: input {tensor['name']!r}")
    output_shape = _shape(outputs[0], f"{where}: output {outputs[0]['name']!r}")
    max_batch = _count(config.get("max_batch_size", 0), f"{where}: max_batch_size", MAX_BATCH)
    batch_dim, fixed, dims = True, None, shape[1:]
    if not max_batch and len(shape) == 3:  # one sample per request
        batch_dim, fixed, dims = False, 1, shape
    elif not max_batch:
        fixed = shape[0] if shape else None
    expected = f"{where} takes {list(shape)}; expected N x C x S x S"
    if len(shape) - batch_dim != 3 or min(dims) < 1 or dims[1] != dims[2] or (fixed or 1) < 1:
        raise InputError(expected)
    if dims[0] > MAX_CHANNELS or dims[1] > MAX_IMAGE_SIZE or (fixed or 1) > MAX_BATCH:
        raise InputError(f"{expected}, C <= {MAX_CHANNELS}, S <= {MAX_IMAGE_SIZE}")
    output_dims = output_shape[1:] if batch_dim else output_shape
    if (batch_dim and not output_shape) or any(d == 0 or d < -1 for d in output_dims):
        raise InputError(
            f"{where} answers {list(output_shape)}; expected a row per sample (-1 or sizes)"
        )
    return EndpointModel(
        url=url,
        protocol=protocol,
        address=address,
        server=_server_name(server),
        name=name,
        version=options.model_version,
        platform=_printable(str(metadata.get("platform", "")), limit=SHOWN_CHARS),
        input_name=tensor["name"],
        input_datatype=datatype,
        dims=dims,
        output_name=outputs[0]["name"],
        output_datatype=output_datatype,
        output_dims=output_dims,
        max_batch_size=max_batch,
        fixed_batch=fixed,
        batch_dim=batch_dim,
    )


def _sent(value: Any) -> str:
    """A value the server sent, quoted for a message: printable and short."""
    return _printable(repr(value), limit=SHOWN_CHARS)


def _printable(text: str, *, limit: int = 300) -> str:
    """``text`` safe for one terminal line: control characters as ``?``, cut at ``limit``."""
    shown = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _record(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{what} is {_sent(value)}, not a JSON object")
    return value


def _text(record: dict, key: str, what: str) -> str:
    """A name the server gives, used again in requests: a short printable string."""
    value = record.get(key)
    if not isinstance(value, str) or not value or _printable(value, limit=256) != value:
        shown = "missing" if value is None else _sent(value)
        raise InputError(f"{what}: {key} is {shown}; expected a short printable name")
    return value


def _tensors(metadata: dict, key: str, where: str) -> list[dict]:
    """The metadata's ``inputs`` or ``outputs``: a list of objects, each with a name."""
    value = metadata.get(key, [])
    if not isinstance(value, list) or len(value) > MAX_DIMS:
        raise InputError(f"{where}: {key} is {_sent(value)}; expected a list of tensors")
    tensors = [_record(tensor, f"{where}: one of its {key}") for tensor in value]
    for tensor in tensors:
        _text(tensor, "name", f"{where}: one of its {key}")
    return tensors


def _datatype(tensor: dict, what: str, verb: str) -> str:
    """A tensor's datatype, one of DATATYPES: ``what`` says which tensor, ``verb`` what the
    client does with it."""
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        shown = _printable(datatype, limit=40) if isinstance(datatype, str) else _sent(datatype)
        shown = "no datatype" if datatype is None else shown
        raise InputError(f"{what} {shown}; this client {verb} {', '.join(DATATYPES)}")
    return datatype


def _shape(tensor: dict, what: str) -> tuple[int, ...]:
    """A tensor's declared dims as integers (-1: any size), or an InputError naming them."""
    dims = tensor.get("shape")
    if isinstance(dims, list) and len(dims) <= MAX_DIMS:
        try:
            return tuple(_integer(d) for d in dims)
        except ValueError:
            pass
    shown = "missing" if dims is None else _sent(dims)
    raise InputError(f"{what}: shape is {shown}; expected a list of integers")


def _integer(value: Any) -> int:
    """An int, or gRPC JSON's int64 string; nothing else (no bool, float or other text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and INTEGER.fullmatch(value):
        return int(value)
    raise ValueError(value)


def _count(value: Any, what: str, most: int) -> int:
    try:
        number = _integer(value)
    except ValueError:
        number = -1
    if not 0 <= number <= most:
        raise InputError(f"{what} is {_sent(value)}; expected an integer from 0 to {most}")
    return number


def _server_name(server: Any) -> str:
    """How the server names itself, for the report only: "triton 2.51.0"."""
    server = server if isinstance(server, dict) else {}
    words = (server.get("name", "server"), server.get("version", ""))
    return _printable(" ".join(str(word) for word in words).strip(), limit=SHOWN_CHARS)


def _answer(model: EndpointModel, result: Any, rows: int) -> np.ndarray:
    """The declared output of one answer, checked: present, of the declared datatype, data that
    fits its shape, ``rows`` rows of the declared dims, at least one value, all finite."""
    where, name = f"{model.url} {model.name}: the server answered", model.output_name
    try:
        sent = result.get_output(name)  # HTTP: a dict; gRPC: a protobuf message
    except Exception:  # HTTP: a response whose outputs are not a list of tensors
        sent = None
    if sent is None:
        raise BadAnswer(f"{where} without output {name!r}")
    datatype = sent.get("datatype") if isinstance(sent, dict) else sent.datatype
    shape = sent.get("shape") if isinstance(sent, dict) else list(sent.shape)
    if datatype != model.output_datatype:
        raise BadAnswer(
            f"{where} output {name!r} as {_sent(datatype)}; its metadata says "
            f"{model.output_datatype}"
        )
    try:
        array = result.as_numpy(name)
    except Exception as exc:
        why = _printable(str(exc).partition("\n")[0], limit=SHOWN_CHARS)
        raise BadAnswer(
            f"{where} output {name!r} with shape {_sent(shape)} and data that does not fit it "
            f"({why})"
        ) from None
    expected = (rows, *model.output_dims) if model.batch_dim else model.output_dims
    fits = array is not None and len(array.shape) == len(expected)
    if not fits or any(d != e and e != -1 for d, e in zip(array.shape, expected, strict=True)):
        declared = ["any" if e == -1 else e for e in expected]
        raise BadAnswer(f"{where} output {name!r} with shape {_sent(shape)}; expected {declared}")
    if array.size == 0:
        raise BadAnswer(f"{where} output {name!r} with no values (shape {list(array.shape)})")
    finite = np.isfinite(array)
    if not finite.all():
        bad = array.size - int(np.count_nonzero(finite))
        raise BadAnswer(f"{where} {bad} NaN or infinite values of {array.size} in {name!r}")
    return array


def _served(client: Any, options: EndpointOptions) -> list[str]:
    """The models the endpoint lists, [] where it does not (PyTriton and KServe restrict it);
    entries that are not a model with a printable name are left out."""
    try:
        index = _call(client, options, "get_model_repository_index")
    except ResnetDeployError:
        return []
    entries = index.get("models", []) if isinstance(index, dict) else index
    if not isinstance(entries, list):
        return []
    names = (entry.get("name") for entry in entries if isinstance(entry, dict))
    return sorted({name for name in names if isinstance(name, str) and _printable(name) == name})


def _listed(names: list[str], most: int = 10) -> str:
    """Names for a message, the first ``most`` of them."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


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
    listed = f"serves {_listed(served)}" if served else "does not list its models"
    url = redact_url(options.url)
    raise InputError(f"{url} {listed}: name the model to use", options=["model_name"])


def _call(client: Any, options: EndpointOptions, method: str, *args: Any) -> Any:
    grpc = parse_url(options.url)[0] == "grpc"
    extra = {"client_timeout": options.timeout_s} if grpc else {}
    if grpc and method != "is_model_ready":
        extra["as_json"] = True
    try:
        return getattr(client, method)(*args, **extra)
    except Exception as exc:
        raise ResnetDeployError(f"{redact_url(options.url)}: {_why(exc)}") from None


def _why(exc: Exception) -> str:
    """One printable line on a failed call: connection failures and timeouts said plainly, an
    answer that is not KServe v2 named by what it was."""
    text = _printable(str(exc).strip().partition("\n")[0] or type(exc).__name__)
    lowered = text.lower()
    if "while decoding the response" in text:  # tritonclient, on an error status's body
        status = text.partition("]")[0].lstrip("[")
        body = getattr(exc, "debug_details", lambda: None)()
        return f"HTTP {status} with a body that is not KServe v2 JSON: {_sent(body)}"
    if type(exc).__name__ == "JSONDecodeError":  # json's or rapidjson's
        return f"an answer that is not KServe v2 JSON ({text})"
    if isinstance(exc, TimeoutError):
        return f"no answer in time ({text})"
    if isinstance(exc, (ConnectionError, OSError)) or any(
        key in lowered for key in ("unavailable", "connection refused", "failed to connect")
    ):
        return f"cannot reach the server ({text})"
    if "deadline" in lowered or "timed out" in lowered or "timeout" in lowered:
        return f"no answer in time ({text})"
    if _garbled(exc):
        return f"an answer that is not KServe v2 ({type(exc).__name__}: {text})"
    return text


def _garbled(exc: Exception) -> bool:
    """Whether tritonclient failed reading what the server sent, rather than passing on the
    server's own error, or failing to reach it."""
    if type(exc).__name__ == "InferenceServerException":  # the server's error, or the network
        return "while decoding the response" in str(exc)
    return not isinstance(exc, OSError) and "timeout" not in type(exc).__name__.lower()


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
