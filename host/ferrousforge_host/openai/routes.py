"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions and /v1/models, as thin
translations over the same generation handler as Ollama's API. Streams are server-sent events
ending with ``data: [DONE]``."""

from __future__ import annotations

import asyncio
import copy
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
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


def _usage(finals: list[Chunk], n: int) -> dict[str, int]:
    """Tokens of every choice; a prompt's once, however many choices it has (as OpenAI counts)."""
    prompt = sum(final.get("prompt_eval_count", 0) for final in finals[::n])
    completion = sum(final.get("eval_count", 0) for final in finals)
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
        "top_logprobs": [  # (none for an echoed prompt's first token: nothing came before it)
            None if e["logprob"] is None else {t["token"]: t["logprob"] for t in e.get("top_logprobs", [])}
            for e in entries
        ],
        "text_offset": offsets,
    }


def _sse(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _error_event(exc: ForgeError) -> bytes:
    error = {"message": printable(exc.message), "type": "server_error", "param": None, "code": None}
    return _sse({"error": error})


async def _events(chunks: AsyncIterator[Chunk], first: Chunk, make: Any, usage: bool) -> AsyncIterator[bytes]:
    """One choice's stream: its events as they come."""
    try:
        chunk: Chunk | None = first
        while chunk is not None:
            for event in make(chunk):
                yield _sse(event)
            if chunk.get("done"):
                if usage:
                    yield _sse(make.usage_event([chunk], 1))
                break
            chunk = await anext(chunks, None)
    except ForgeError as exc:
        yield _error_event(exc)
    yield b"data: [DONE]\n\n"


async def _merged(streams: list[AsyncIterator[Chunk]]) -> AsyncGenerator[tuple[int, Chunk]]:
    """Several choices' chunks as each comes, with the choice's index; a choice's error ends all."""
    queue: asyncio.Queue[tuple[int, Chunk | ForgeError | None]] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[Chunk]) -> None:
        try:
            async for chunk in stream:
                await queue.put((index, chunk))
        except ForgeError as exc:
            await queue.put((index, exc))
        finally:
            await queue.put((index, None))
            await _close(stream)

    tasks = [asyncio.create_task(pump(i, stream)) for i, stream in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if isinstance(item, ForgeError):
                raise item
            if item is None:
                running -= 1
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _close(stream: AsyncIterator[Chunk]) -> None:
    if aclose := getattr(stream, "aclose", None):
        await aclose()


async def _merged_events(
    merged: AsyncGenerator[tuple[int, Chunk]], first: tuple[int, Chunk], shapes: list[_Shape], usage: bool
) -> AsyncIterator[bytes]:
    """Several choices' events, interleaved as they come; the usage chunk sums them all."""
    finals: dict[int, Chunk] = {}
    try:
        item: tuple[int, Chunk] | None = first
        while item is not None:
            index, chunk = item
            for event in shapes[index](chunk):
                yield _sse(event)
            if chunk.get("done"):
                finals[index] = chunk
            item = await anext(merged, None)
        if usage:
            yield _sse(shapes[0].usage_event([finals[i] for i in sorted(finals)], shapes[0].n))
    except ForgeError as exc:
        yield _error_event(exc)
    finally:
        await merged.aclose()
    yield b"data: [DONE]\n\n"


class _Shape:
    """Builds OpenAI objects for one choice of a response: the same id and timestamp throughout."""

    def __init__(self, kind: str, model: str, logprobs: bool = False, n: int = 1) -> None:
        self.kind = kind
        self.index = 0  # the choice's
        self.n = n  # choices a prompt
        self.echo: str | None = None  # the prompt, until the choice's first event has repeated it
        self.want_logprobs = logprobs
        self.calls = 0  # tool calls given out so far
        self.started = False  # the choice's first chunk (the one that says its role) is out
        self.usage_chunks = False  # stream_options.include_usage: each chunk says usage (null until the last)
        self.offset = 0  # characters of text so far (the completions API's text_offset)
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.model = model

    def choices(self, count: int, prompts: list[str] | None = None, echo: bool = False) -> list[_Shape]:
        """One shape a choice, sharing the response's id and timestamp (``prompts``: each choice's,
        which ``echo`` repeats before its text; text offsets count from the prompt's start)."""
        shapes = []
        for index in range(count):
            shape = copy.copy(self)
            shape.index = index
            shape.echo = prompts[index] if prompts and echo else None
            shape.offset = len(prompts[index]) if prompts and not echo else 0
            shapes.append(shape)
        return shapes

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
        reason = FINISH.get(final.get("done_reason", ""), "stop")
        return "tool_calls" if self.calls and reason != "length" else reason  # cut short: "length"

    def logprobs(self, entries: list[dict[str, Any]] | None, text: str) -> dict[str, Any] | None:
        if not self.want_logprobs:
            return None
        if self.kind == "chat":
            return {"content": entries or []}
        out = _completion_logprobs(entries or [], self.offset)
        self.offset += len(text)
        return out

    def __call__(self, chunk: Chunk) -> list[dict[str, Any]]:
        """Stream events for one Ollama chunk."""
        if self.kind == "chat":
            message = chunk["message"]
            calls = _tool_calls(chunk)
            delta: dict[str, Any] = {}
            if not self.started:  # as OpenAI's: the role once, first; content null before calls
                delta = {"role": "assistant", "content": message["content"] or (None if calls else "")}
                self.started = True
            elif message["content"]:
                delta["content"] = message["content"]
            if message.get("thinking"):
                delta["reasoning"] = message["thinking"]
            if calls:
                delta["tool_calls"] = [{"index": self.calls + i, **c} for i, c in enumerate(calls)]
                self.calls += len(calls)
            logprobs = self.logprobs(chunk.get("logprobs"), "")
            choice: dict[str, Any] = {"index": self.index, "delta": delta, "logprobs": logprobs}
            obj = "chat.completion.chunk"
        else:
            text, entries = chunk["response"], chunk.get("logprobs")
            if self.echo is not None:  # the choice's first event: its prompt first
                text, self.echo = self.echo + text, None
                entries = [*(chunk.get("prompt_logprobs") or []), *(entries or [])]
            choice = {"index": self.index, "text": text, "logprobs": self.logprobs(entries, text)}
            obj = "text_completion"
        choice["finish_reason"] = self.finish_reason(chunk) if chunk.get("done") else None
        event = self.envelope(obj, [choice])
        if self.usage_chunks:
            event["usage"] = None
        return [event]

    def usage_event(self, finals: list[Chunk], n: int) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self.envelope(obj, []), "usage": _usage(finals, n)}

    def whole(self, chunks: list[Chunk]) -> dict[str, Any]:
        """The choice, from all its chunks."""
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
            return {
                "index": self.index,
                "message": message,
                "logprobs": {"content": entries} if self.want_logprobs else None,
                "finish_reason": self.finish_reason(final),
            }
        text = (self.echo or "") + "".join(c["response"] for c in chunks)
        if self.echo is not None:
            entries = [e for c in chunks for e in c.get("prompt_logprobs") or []] + entries
        return {
            "index": self.index,
            "text": text,
            "logprobs": _completion_logprobs(entries, self.offset) if self.want_logprobs else None,
            "finish_reason": self.finish_reason(final),
        }


async def _collect(stream: AsyncIterator[Chunk]) -> list[Chunk]:
    try:
        return [chunk async for chunk in stream]
    finally:
        await _close(stream)


async def _answer(
    streams: list[AsyncIterator[Chunk]],
    shape: _Shape,
    stream: bool,
    usage: bool,
    prompts: list[str] | None = None,
    echo: bool = False,
) -> Response:
    """The response for one choice or several (``n``, a list of prompts), generated side by side.
    An error before the first token is an ordinary error response."""
    shape.usage_chunks = usage
    shapes = shape.choices(len(streams), prompts, echo)
    obj = "chat.completion" if shape.kind == "chat" else "text_completion"
    if not stream:
        tasks = [asyncio.create_task(_collect(s)) for s in streams]
        try:
            collected = await asyncio.gather(*tasks)
        finally:
            for task in tasks:  # the others, when one failed
                task.cancel()
        choices = [s.whole(chunks) for s, chunks in zip(shapes, collected, strict=True)]
        finals = [chunks[-1] for chunks in collected]
        return JSONResponse({**shape.envelope(obj, choices), "usage": _usage(finals, shape.n)})
    if len(streams) == 1:
        first = await anext(streams[0])
        return StreamingResponse(_events(streams[0], first, shapes[0], usage), media_type="text/event-stream")
    merged = _merged(streams)
    try:
        head = await anext(merged)
    except BaseException:
        await merged.aclose()
        raise
    events = _merged_events(merged, head, shapes, usage)
    return StreamingResponse(events, media_type="text/event-stream")


async def chat_completions(request: Request) -> Response:
    choices = chat_request(await read_json(request))
    reqs = choices.requests
    streams = [request.app.state.generation.chat(req) for req in reqs]
    shape = _Shape("chat", reqs[0].model.display, reqs[0].logprobs, choices.n)
    return await _answer(streams, shape, reqs[0].stream, choices.usage)


async def completions(request: Request) -> Response:
    choices = completion_request(await read_json(request))
    reqs = choices.requests
    streams = [request.app.state.generation.generate(req) for req in reqs]
    shape = _Shape("completion", reqs[0].model.display, reqs[0].logprobs, choices.n)
    prompts = [req.prompt for req in reqs]
    return await _answer(streams, shape, reqs[0].stream, choices.usage, prompts, choices.echo)


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


async def delete_model(request: Request) -> Response:
    """Deletes a model from the store (as /api/delete), in OpenAI's answer."""
    name = ModelName.parse(request.path_params["model"])
    await request.app.state.models.delete(name)
    return JSONResponse({"id": name.display, "object": "model", "deleted": True})


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/models/{model:path}", model, methods=["GET"]),
    Route("/v1/models/{model:path}", delete_model, methods=["DELETE"]),
]
