"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions and /v1/models, as thin
translations over the same generation handler as Ollama's API. Streams are server-sent events
ending with ``data: [DONE]``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ferrousforge.errors import ForgeError, ModelNotFound
from ferrousforge.names import ModelName
from ferrousforge.protocol.openai import chat_request, completion_request
from ferrousforge_host.http import Chunk, JSONResponse, printable, read_json

FINISH = {"stop": "stop", "length": "length"}


def _usage(final: Chunk) -> dict[str, int]:
    prompt, completion = final.get("prompt_eval_count", 0), final.get("eval_count", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _tool_calls(final: Chunk) -> list[dict[str, Any]] | None:
    calls = final.get("message", {}).get("tool_calls")
    if not calls:
        return None
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": c["function"]["name"], "arguments": json.dumps(c["function"]["arguments"])},
        }
        for c in calls
    ]


def _sse(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _events(chunks: AsyncIterator[Chunk], first: Chunk, make: Any, usage: bool) -> AsyncIterator[bytes]:
    try:
        chunk: Chunk | None = first
        while chunk is not None:
            for event in make(chunk):
                yield _sse(event)
            if chunk.get("done"):
                if usage:
                    yield _sse(make.usage_event(chunk))
                break
            chunk = await anext(chunks, None)
    except ForgeError as exc:
        yield _sse(
            {
                "error": {
                    "message": printable(exc.message),
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        )
    yield b"data: [DONE]\n\n"


class _Shape:
    """Builds OpenAI objects for one response: the same id and timestamp throughout."""

    def __init__(self, kind: str, model: str) -> None:
        self.kind = kind
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.model = model

    def envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "ferrousforge",
            "choices": choices,
        }

    def finish_reason(self, final: Chunk) -> str:
        return "tool_calls" if _tool_calls(final) else FINISH.get(final.get("done_reason", ""), "stop")

    def __call__(self, chunk: Chunk) -> list[dict[str, Any]]:
        """Stream events for one Ollama chunk."""
        if self.kind == "chat":
            delta: dict[str, Any] = {"role": "assistant", "content": chunk["message"]["content"]}
            if chunk.get("done") and (calls := _tool_calls(chunk)):
                delta = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"index": i, **c} for i, c in enumerate(calls)],
                }
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": chunk["response"], "logprobs": None}
            obj = "text_completion"
        choice["finish_reason"] = self.finish_reason(chunk) if chunk.get("done") else None
        return [self.envelope(obj, [choice])]

    def usage_event(self, final: Chunk) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self.envelope(obj, []), "usage": _usage(final)}

    def whole(self, chunks: list[Chunk]) -> dict[str, Any]:
        final = chunks[-1]
        if self.kind == "chat":
            text = "".join(c["message"]["content"] for c in chunks)
            calls = _tool_calls(final)
            message: dict[str, Any] = {"role": "assistant", "content": None if calls else text}
            if calls:
                message["tool_calls"] = calls
            choice = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": self.finish_reason(final),
            }
            out = self.envelope("chat.completion", [choice])
        else:
            text = "".join(c["response"] for c in chunks)
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": self.finish_reason(final)}
            out = self.envelope("text_completion", [choice])
        return {**out, "usage": _usage(final)}


async def _answer(chunks: AsyncIterator[Chunk], shape: _Shape, stream: bool, usage: bool) -> Response:
    first = await anext(chunks)  # errors before the first token are ordinary error responses
    if not stream:
        collected = [first]
        async for chunk in chunks:
            collected.append(chunk)
        return JSONResponse(shape.whole(collected))
    return StreamingResponse(_events(chunks, first, shape, usage), media_type="text/event-stream")


async def chat_completions(request: Request) -> Response:
    req, usage = chat_request(await read_json(request))
    chunks = request.app.state.generation.chat(req)
    return await _answer(chunks, _Shape("chat", req.model.display), req.stream, usage)


async def completions(request: Request) -> Response:
    req, usage = completion_request(await read_json(request))
    chunks = request.app.state.generation.generate(req)
    return await _answer(chunks, _Shape("completion", req.model.display), req.stream, usage)


def _model(stored: Any) -> dict[str, Any]:
    return {
        "id": stored.name.display,
        "object": "model",
        "created": int(stored.modified_at),
        "owned_by": stored.name.namespace,
    }


async def models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [_model(m) for m in request.app.state.store.list()]})


async def model(request: Request) -> Response:
    name = ModelName.parse(request.path_params["model"])
    if not request.app.state.store.exists(name):
        raise ModelNotFound(name.display)
    return JSONResponse(_model(request.app.state.store.get(name)))


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/models/{model:path}", model, methods=["GET"]),
]
