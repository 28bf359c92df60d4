"""HTTP plumbing shared by every capability: JSON bodies, errors, NDJSON streams."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from itertools import accumulate, count
from operator import sub
from typing import Any, Protocol

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ferrousforge.errors import BadRequest, ForgeError, PayloadTooLarge

Chunk = dict[str, Any]
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class JSONResponse(StarletteJSONResponse):
    """JSON through orjson: fast, UTF-8, and numpy arrays (embeddings) written without copies."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


# Bounds on a JSON body's structure, so that no body can exhaust the recursion or memory of what
# handles it (schemas, templates, encoders): each is a 400 naming the limit.
MAX_DEPTH = 64
MAX_CONTAINERS = 100_000  # objects and arrays in one body
MAX_KEYS = 100_000  # object keys in one body
# A JSON string, or an unterminated one up to the end: matched in one linear pass whatever the bytes.
_STRING = re.compile(rb'"[^"\\]*(?:\\[\s\S][^"\\]*)*"?')
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = bytes.maketrans(b"[{]}", b"\2\2\0\0")  # an opener adds 2, a closer 0: depth = sum - position
_BOM = b"\xef\xbb\xbf"


async def read_json(request: Request) -> Any:
    """The request's JSON body (``{}`` when empty), within ``max_body`` bytes (413): ``parse_json``."""
    return parse_json(await read_body(request, request.app.state.settings.max_body))


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) past ``limit`` bytes, declared or sent."""
    declared = request.headers.get("content-length")
    too_large = PayloadTooLarge(f"request body is larger than {limit} bytes (FERROUSFORGE_MAX_BODY)")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise too_large
    return bytes(body)


def parse_json(body: bytes | bytearray) -> Any:
    """A JSON body (``{}`` when empty) within the bounds above, and strict JSON (400): no NaN or
    Infinity, no lone surrogates, no number beyond a double's range. Integers within 64 bits (signed
    or unsigned: a seed up to 2**64 - 1) stay exact; larger ones arrive as floats, outside the range
    of every field that takes an integer."""
    if body.startswith(_BOM):
        body = body[3:]
    if not body or body.isspace():
        return {}
    check_structure(body)
    try:
        return orjson.loads(body)
    except RecursionError:
        raise BadRequest(f"request body nests deeper than {MAX_DEPTH} levels") from None
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if reason.startswith("depth limit"):
            raise BadRequest(f"request body nests deeper than {MAX_DEPTH} levels") from None
        if reason.startswith("str is not valid UTF-8"):
            reason = "request body is not valid UTF-8"
        raise BadRequest(f"invalid JSON: {reason}") from None


def check_structure(body: bytes | bytearray) -> None:
    """Enforce MAX_DEPTH, MAX_CONTAINERS and MAX_KEYS on raw JSON without parsing it.

    Fast path: counting brackets and colons, strings included, over-counts; when that is within
    the limits nothing else is done. Otherwise strings are cut out and the structure measured."""
    if _count(body, b"[{") <= MAX_DEPTH and _count(body, b":") <= MAX_KEYS:
        return
    bare = _STRING.sub(b"", body)
    brackets = bare.translate(None, _NOT_BRACKETS)
    openers = brackets.count(b"[") + brackets.count(b"{")
    if openers > MAX_CONTAINERS:
        raise BadRequest(f"request body holds more than {MAX_CONTAINERS} objects and arrays")
    if bare.count(b":") > MAX_KEYS:
        raise BadRequest(f"request body holds more than {MAX_KEYS} object keys")
    if 2 * openers != len(brackets):
        return  # unbalanced: not JSON, which the parser says
    if max(map(sub, accumulate(brackets.translate(_STEP)), count(1)), default=0) > MAX_DEPTH:
        raise BadRequest(f"request body nests deeper than {MAX_DEPTH} levels")


def _count(body: bytes | bytearray, chars: bytes) -> int:
    """How many bytes of ``body`` are one of ``chars`` (numpy's compare is faster on large bodies)."""
    if len(body) < 1 << 16:
        return sum(body.count(c) for c in chars)
    view = np.frombuffer(body, np.uint8)
    return sum(int(np.count_nonzero(view == c)) for c in chars)


def printable(text: str) -> str:
    """Text safe to put in JSON: an input echoed back may hold lone surrogates (valid JSON escapes,
    not valid UTF-8); they are written as ``\\udXXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# Anthropic's error types by status
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def error_body(path: str, status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """An error in the shape of the API the path is in: Anthropic's on ``/v1/messages``, OpenAI's on
    the other ``/v1/`` paths (``code`` is OpenAI's), Ollama's elsewhere."""
    message = printable(message)
    if path.startswith("/v1/messages"):
        kind = ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if path.startswith("/v1/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return {"error": message}


def error_response(exc: ForgeError) -> JSONResponse:
    return JSONResponse(error_body("/", exc.status, exc.message), status_code=exc.status, headers=exc.headers)


def _line(chunk: Chunk) -> bytes:
    return orjson.dumps(chunk, option=_OPTIONS | orjson.OPT_APPEND_NEWLINE)


async def respond(chunks: AsyncIterator[Chunk], stream: bool, merge: Any = None) -> Response:
    """Answer with an NDJSON stream or, for ``stream: false``, one JSON object.

    The first chunk is awaited before the status line is sent, so that a bad request or a failed
    load is a proper error response rather than a broken stream.
    """
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        return JSONResponse({})
    if not stream:
        collected = [first]
        async for chunk in chunks:
            collected.append(chunk)
        return JSONResponse(merge(collected) if merge else collected[-1])

    async def body() -> AsyncIterator[bytes]:
        yield _line(first)
        try:
            async for chunk in chunks:
                yield _line(chunk)
        except ForgeError as exc:  # after the status line, errors travel in the stream (as Ollama)
            yield _line({"error": printable(exc.message)})

    return StreamingResponse(body(), media_type="application/x-ndjson")


class EventReply(Protocol):
    """A dialect's answer built from the host's chat chunks, as one object or as server-sent events
    (Anthropic's messages, OpenAI's responses)."""

    def start(self) -> list[Any]: ...
    def feed(self, chunk: Chunk) -> list[Any]: ...
    def fail(self, exc: ForgeError) -> list[Any]: ...
    def whole(self) -> dict[str, Any]: ...
    def sse(self, event: Any) -> bytes: ...


async def respond_events(reply: EventReply, chunks: AsyncIterator[Chunk], stream: bool) -> Response:
    """``respond`` for an event dialect: the first chunk is awaited before the status line (errors
    before it are ordinary error responses); after it an error is the dialect's own events."""
    first = await anext(chunks)
    if not stream:
        reply.feed(first)
        async for chunk in chunks:
            reply.feed(chunk)
        return JSONResponse(reply.whole())

    async def body() -> AsyncIterator[bytes]:
        for event in reply.start():
            yield reply.sse(event)
        try:
            chunk: Chunk | None = first
            while chunk is not None:
                for event in reply.feed(chunk):
                    yield reply.sse(event)
                chunk = None if chunk.get("done") else await anext(chunks, None)
        except ForgeError as exc:
            for event in reply.fail(exc):
                yield reply.sse(event)

    return StreamingResponse(body(), media_type="text/event-stream")


class CancelOnDisconnect:
    """ASGI middleware: a request whose client goes away before its answer is complete is cancelled,
    as Ollama cancels a request's context, so that a ``stream: false`` generation (or one still in the
    queue or reading its prompt) stops and frees its slot instead of running to its end for nobody.
    Once the app has read the body, the server's next ``receive`` is the disconnect; it is awaited
    here, and the app's own later ``receive`` calls (a stream's disconnect listener) get it too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gone: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        watcher: asyncio.Task[None] | None = None
        answered = False

        async def watch() -> None:
            message = await receive()
            while message["type"] != "http.disconnect":  # a body the app left unread
                message = await receive()
            gone.set_result(message)
            if not answered:
                scope["client_gone"] = True
                app.cancel()

        async def receive_body() -> Message:
            nonlocal watcher
            if watcher is not None:
                return await asyncio.shield(gone)
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                watcher = asyncio.ensure_future(watch())
            return message

        async def send_and_note(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered = True
            await send(message)

        app = asyncio.ensure_future(self.app(scope, receive_body, send_and_note))
        try:
            await app
        except asyncio.CancelledError:
            if not scope.get("client_gone"):
                raise
        finally:
            if watcher is not None:
                watcher.cancel()
