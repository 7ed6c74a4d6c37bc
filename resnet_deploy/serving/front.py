"""The HTTP front: every request bounded before tritonserver reads it.

Triton 2.51 (the build PyTriton 0.7.0 ships) has no bound on an HTTP request, and it allocates a
JSON request's tensors from their declared shapes before it checks them against the model: one
request declaring ``[1, 3, 224, 224000000000]`` made tritonserver abort (SIGABRT), and a 2 GB
declared shape was allocated before its error. Over gRPC it checks the shape first (measured:
``INVALID_ARGUMENT``, no allocation), so only HTTP gets a front. Clients talk to this front on
the port they asked for; it refuses what is too large with KServe's error body and passes
everything else to tritonserver on a private loopback port, bytes unchanged both ways (status,
headers, compressed bodies), so the protocol seen by clients is Triton's own.

The bounds: a body (as sent, and once decompressed) of at most ``MAX_REQUEST_BYTES``, and no
input whose declared shape and data type need more than that. Everything else (malformed JSON,
shapes the model does not take, binary sizes that do not match) is Triton's to refuse, which it
does without harm.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import zlib
from dataclasses import dataclass

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector, web

from resnet_deploy.errors import InputError

MAX_REQUEST_BYTES = 64 * 1024 * 1024  # as later Triton releases default to; a batch of 32
# ResNet50 images is 19 MB in binary
LIMIT = f"the {MAX_REQUEST_BYTES:,} bytes a request may hold"
BYTES_PER_ELEMENT = {
    "BOOL": 1,
    "UINT8": 1,
    "INT8": 1,
    "UINT16": 2,
    "INT16": 2,
    "FP16": 2,
    "BF16": 2,
    "UINT32": 4,
    "INT32": 4,
    "FP32": 4,
    "UINT64": 8,
    "INT64": 8,
    "FP64": 8,
    "BYTES": 4,  # at least its 4-byte length prefix per element
}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length", "upgrade"}
START_TIMEOUT_S = 30.0


class RequestTooLarge(InputError):
    """A request beyond the front's bounds; answered 413 or 400 with KServe's error body."""


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


def check_infer_request(body: bytes, headers: dict[str, str]) -> Refusal | None:
    """Why an inference request must not reach tritonserver, or None.

    Reads only its JSON header (the body's first ``Inference-Header-Content-Length`` bytes for
    binary tensors, else the whole body), decompressed within ``MAX_REQUEST_BYTES``.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        data = _decompressed(body, lowered.get("content-encoding", "").strip().lower())
    except RequestTooLarge as exc:
        return Refusal(413 if "inflates" in str(exc) else 400, str(exc))
    header_length = lowered.get("inference-header-content-length")
    if header_length is not None:
        if not header_length.strip().isdigit():
            return Refusal(400, f"Inference-Header-Content-Length {header_length!r} is not a size")
        data = data[: int(header_length)]
    try:
        request = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None  # not JSON: Triton refuses it without allocating anything
    inputs = request.get("inputs") if isinstance(request, dict) else None
    if not isinstance(inputs, list):
        return None
    for entry in inputs:
        refusal = _check_input(entry)
        if refusal:
            return refusal
    return None


def _check_input(entry: object) -> Refusal | None:
    if not isinstance(entry, dict):
        return None
    name = str(entry.get("name", "?"))[:64]
    shape = entry.get("shape")
    valid = isinstance(shape, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    )
    if not valid:
        return Refusal(
            400, f"input {name!r}: shape must be a list of integers >= 0, got {shape!r}"[:300]
        )
    size = BYTES_PER_ELEMENT.get(str(entry.get("datatype", "")).upper(), 1)
    needed = math.prod(shape) * size
    if needed > MAX_REQUEST_BYTES:
        return Refusal(
            400,
            f"input {name!r} declares shape {shape} of {entry.get('datatype')}: {needed:,} bytes, "
            f"more than {LIMIT}",
        )
    return None


def _decompressed(body: bytes, encoding: str) -> bytes:
    """The body as Triton will read it, never inflated beyond ``MAX_REQUEST_BYTES``."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        return body  # Triton refuses other encodings itself
    inflater = zlib.decompressobj(wbits=47)  # gzip or zlib, by header
    try:
        data = inflater.decompress(body, MAX_REQUEST_BYTES + 1)
    except zlib.error as exc:
        raise RequestTooLarge(f"the {encoding} body cannot be decompressed: {exc}") from None
    if len(data) > MAX_REQUEST_BYTES or inflater.unconsumed_tail:
        raise RequestTooLarge(f"the {encoding} body inflates beyond {LIMIT}")
    return data


class HttpFront:
    """The front on ``host:port``, passing requests to tritonserver at ``127.0.0.1:upstream``.

    Runs its own event loop in a thread of this process; ``start`` returns once it listens (or
    raises why it cannot), ``stop`` closes it after the requests in flight.
    """

    def __init__(self, host: str, port: int, upstream_port: int):
        self.host, self.port = host, port
        self.upstream = f"http://127.0.0.1:{upstream_port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(START_TIMEOUT_S)

    async def _start(self) -> None:
        self._session = ClientSession(
            # no idle keep-alive connections: Triton's drain waits for open HTTP connections,
            # and pooled ones held every stop for its whole exit timeout (20 s)
            connector=TCPConnector(limit=0, force_close=True),
            timeout=ClientTimeout(total=None, sock_connect=10),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/{path:.*}", self._forward)
        # bodies stay as sent: decompressed here only within the bound, and by Triton for use
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, auto_decompress=False
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(
                413, f"the body exceeds the {MAX_REQUEST_BYTES:,} bytes a request may hold"
            )
        if request.method == "POST" and request.path.rstrip("/").endswith("/infer"):
            refusal = check_infer_request(body, dict(request.headers))
            if refusal:
                return _error(refusal.status, refusal.message)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            async with self._session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=body
            ) as upstream:
                answer = await upstream.read()
                kept = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                return web.Response(status=upstream.status, headers=kept, body=answer)
        except ClientError as exc:  # starting, stopping or gone: say so, as Triton would
            return _error(503, f"the server is not answering ({type(exc).__name__})")

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
        try:
            future.result(START_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(START_TIMEOUT_S)
            self._loop.close()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
