"""HTTP plumbing shared by every capability: JSON bodies, errors, NDJSON streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse as StarletteJSONResponse
from starlette.responses import Response, StreamingResponse

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


async def read_json(request: Request) -> Any:
    limit: int = request.app.state.settings.max_body
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    if not body.strip():
        return {}
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None


def printable(text: str) -> str:
    """Text safe to put in JSON: an input echoed back may hold lone surrogates (valid JSON escapes,
    not valid UTF-8); they are written as ``\\udXXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(exc: ForgeError) -> JSONResponse:
    return JSONResponse({"error": printable(exc.message)}, status_code=exc.status, headers=exc.headers)


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
