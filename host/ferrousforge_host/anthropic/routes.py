"""Anthropic's Messages API (/v1/messages, /v1/messages/count_tokens) as a thin translation over
the generation handler: a message of content blocks built from Ollama's chat chunks, answered
whole or streamed as Anthropic's named server-sent events."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferrousforge.errors import ForgeError
from ferrousforge.protocol.anthropic import messages_request
from ferrousforge.protocol.blocks import arguments_json, new_id, parts
from ferrousforge_host.http import Chunk, JSONResponse, error_body, read_json, respond_events

Event = tuple[str, dict[str, Any]]
BLOCKS = {  # a streamed block: its empty form, its delta's type and text field
    "text": ({"type": "text", "text": ""}, "text_delta", "text"),
    "thinking": ({"type": "thinking", "thinking": "", "signature": ""}, "thinking_delta", "thinking"),
}


class _Message:
    """One assistant message: its content blocks, and the events that build them."""

    def __init__(self, model: str) -> None:
        self.id = new_id("msg_")
        self.model = model
        self.content: list[dict[str, Any]] = []
        self.open: str | None = None  # the kind of the text or thinking block being written
        self.stop: dict[str, Any] = {"stop_reason": None, "stop_sequence": None}
        self.usage = {"input_tokens": 0, "output_tokens": 0}

    def whole(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.content,
            **self.stop,
            "usage": self.usage,
        }

    def start(self) -> list[Event]:
        return [("message_start", {"type": "message_start", "message": {**self.whole(), "content": []}})]

    def _begin(self, block: dict[str, Any]) -> Event:
        self.content.append(block)
        return "content_block_start", {
            "type": "content_block_start",
            "index": len(self.content) - 1,
            "content_block": dict(block),
        }

    def _delta(self, delta: dict[str, Any]) -> Event:
        return "content_block_delta", {
            "type": "content_block_delta",
            "index": len(self.content) - 1,
            "delta": delta,
        }

    def _close(self) -> list[Event]:
        """Ends the open text or thinking block, if any."""
        if self.open is None:
            return []
        self.open = None
        return self._stop_block()

    def fail(self, exc: ForgeError) -> list[Event]:
        """After the status line, an error is an ``error`` event."""
        return [("error", error_body("/v1/messages", exc.status, exc.message))]

    def sse(self, event: Event) -> bytes:
        return b"event: " + event[0].encode() + b"\ndata: " + orjson.dumps(event[1]) + b"\n\n"

    def feed(self, chunk: Chunk) -> list[Event]:
        events: list[Event] = []
        for kind, value in parts(chunk):
            if kind == "call":
                events += self._close()
                block = {"type": "tool_use", "id": new_id("toolu_"), "name": value["name"]}  # Anthropic's ids
                events.append(self._begin({**block, "input": {}}))
                self.content[-1]["input"] = value["arguments"]
                delta = {"type": "input_json_delta", "partial_json": arguments_json(value["arguments"])}
                events += [self._delta(delta), *self._stop_block()]
                continue
            empty, delta_type, field = BLOCKS[kind]
            if self.open != kind:
                events += self._close()
                events.append(self._begin(dict(empty)))
                self.open = kind
            self.content[-1][field] += value
            events.append(self._delta({"type": delta_type, field: value}))
        if chunk.get("done"):
            events += self._close() + self._finish(chunk)
        return events

    def _stop_block(self) -> list[Event]:
        return [("content_block_stop", {"type": "content_block_stop", "index": len(self.content) - 1})]

    def _finish(self, final: Chunk) -> list[Event]:
        if final.get("done_reason") == "length":
            reason = "max_tokens"
        elif any(b["type"] == "tool_use" for b in self.content):
            reason = "tool_use"
        elif final.get("stop_sequence"):  # when the producer says which stop string ended it
            reason = "stop_sequence"
        else:
            reason = "end_turn"
        self.stop = {"stop_reason": reason, "stop_sequence": final.get("stop_sequence")}
        self.usage = {
            "input_tokens": final.get("prompt_eval_count", 0),
            "output_tokens": final.get("eval_count", 0),
        }
        return [
            ("message_delta", {"type": "message_delta", "delta": dict(self.stop), "usage": dict(self.usage)}),
            ("message_stop", {"type": "message_stop"}),
        ]


async def messages(request: Request) -> Response:
    req = messages_request(await read_json(request))
    chunks = request.app.state.generation.chat(req)
    return await respond_events(_Message(req.model.display), chunks, req.stream)


async def count_tokens(request: Request) -> Response:
    """The whole prompt's token count (however long: not fitted to the window, as a reply's would be)."""
    req = messages_request(await read_json(request), counting=True)
    return JSONResponse({"input_tokens": await request.app.state.generation.count_chat(req)})


routes = [
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
