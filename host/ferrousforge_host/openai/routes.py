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


def _tool_calls(chunk: Chunk) -> list[dict[str, Any]]:
    return [
        {
            "id": c.get("id") or f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": c["function"]["name"], "arguments": json.dumps(c["function"]["arguments"])},
        }
        for c in chunk.get("message", {}).get("tool_calls") or []
    ]


def _completion_logprobs(entries: list[dict[str, Any]], offset: int) -> dict[str, Any]:
    """The completions API's older logprobs shape."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e.get("top_logprobs", [])} for e in entries],
        "text_offset": offsets,
    }


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

    def __init__(self, kind: str, model: str, logprobs: bool = False) -> None:
        self.kind = kind
        self.want_logprobs = logprobs
        self.calls = 0  # tool calls given out so far
        self.offset = 0  # characters of text so far (the completions API's text_offset)
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
        return "tool_calls" if self.calls else FINISH.get(final.get("done_reason", ""), "stop")

    def logprobs(self, chunk: Chunk) -> dict[str, Any] | None:
        entries = chunk.get("logprobs")
        if not self.want_logprobs:
            return None
        if self.kind == "chat":
            return {"content": entries or []}
        out = _completion_logprobs(entries or [], self.offset)
        self.offset += len(chunk.get("response", ""))
        return out

    def __call__(self, chunk: Chunk) -> list[dict[str, Any]]:
        """Stream events for one Ollama chunk."""
        if self.kind == "chat":
            message = chunk["message"]
            delta: dict[str, Any] = {"role": "assistant", "content": message["content"]}
            if message.get("thinking"):
                delta["reasoning"] = message["thinking"]
            if calls := _tool_calls(chunk):
                delta["tool_calls"] = [{"index": self.calls + i, **c} for i, c in enumerate(calls)]
                self.calls += len(calls)
                if not message["content"]:
                    delta["content"] = None
            choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": self.logprobs(chunk)}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": chunk["response"], "logprobs": self.logprobs(chunk)}
            obj = "text_completion"
        choice["finish_reason"] = self.finish_reason(chunk) if chunk.get("done") else None
        return [self.envelope(obj, [choice])]

    def usage_event(self, final: Chunk) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self.envelope(obj, []), "usage": _usage(final)}

    def whole(self, chunks: list[Chunk]) -> dict[str, Any]:
        final = chunks[-1]
        entries = [e for c in chunks for e in c.get("logprobs") or []]
        if self.kind == "chat":
            text = "".join(c["message"]["content"] for c in chunks)
            thinking = "".join(c["message"].get("thinking", "") for c in chunks)
            calls = [call for c in chunks for call in _tool_calls(c)]
            self.calls = len(calls)
            message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
            if thinking:
                message["reasoning"] = thinking
            if calls:
                message["tool_calls"] = calls
            choice = {
                "index": 0,
                "message": message,
                "logprobs": {"content": entries} if self.want_logprobs else None,
                "finish_reason": self.finish_reason(final),
            }
            out = self.envelope("chat.completion", [choice])
        else:
            text = "".join(c["response"] for c in chunks)
            choice = {
                "index": 0,
                "text": text,
                "logprobs": _completion_logprobs(entries, 0) if self.want_logprobs else None,
                "finish_reason": self.finish_reason(final),
            }
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
    return await _answer(chunks, _Shape("chat", req.model.display, req.logprobs), req.stream, usage)


async def completions(request: Request) -> Response:
    req, usage = completion_request(await read_json(request))
    chunks = request.app.state.generation.generate(req)
    shape = _Shape("completion", req.model.display, req.logprobs)
    return await _answer(chunks, shape, req.stream, usage)


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
