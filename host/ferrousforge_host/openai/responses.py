"""OpenAI's Responses API (/v1/responses) as a thin translation over the generation handler: one
response object built from Ollama's chat chunks, answered whole or streamed as the Responses
server-sent events (each with its ``type`` and ``sequence_number``)."""

from __future__ import annotations

import copy
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferrousforge.errors import ForgeError
from ferrousforge.protocol.blocks import arguments_json, new_id, parts
from ferrousforge.protocol.responses import responses_request
from ferrousforge_host.http import Chunk, printable, read_json, respond_events

Event = dict[str, Any]
ITEMS = {  # a streamed kind of text: its output item type, id prefix and empty content part
    "text": ("message", "msg_", {"type": "output_text", "text": "", "annotations": [], "logprobs": []}),
    "thinking": ("reasoning", "rs_", {"type": "reasoning_text", "text": ""}),
}
DELTA = {"message": "response.output_text", "reasoning": "response.reasoning_text"}


def _no_logprobs(item: dict[str, Any]) -> dict[str, Any]:
    """Text events carry ``logprobs`` (none are computed here); reasoning events do not."""
    return {"logprobs": []} if item["type"] == "message" else {}


class _Response:
    """One response: its output items, and the events that build them."""

    def __init__(self, model: str, echo: dict[str, Any]) -> None:
        self.id = new_id("resp_")
        self.created_at = int(time.time())
        self.model = model
        self.echo = echo
        self.status = "in_progress"
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the message or reasoning item being written
        self.extra: dict[str, Any] = {"error": None, "incomplete_details": None, "usage": None}
        self.sequence = 0

    def whole(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "model": self.model,
            "output": copy.deepcopy(self.output),
            **self.extra,
            "store": False,
            "truncation": "disabled",
            "previous_response_id": None,
            **self.echo,
        }

    def _event(self, kind: str, **fields: Any) -> Event:
        self.sequence += 1
        return {"type": kind, "sequence_number": self.sequence - 1, **fields}

    def _added(self, item: dict[str, Any]) -> Event:
        self.output.append(item)
        return self._event(
            "response.output_item.added", output_index=len(self.output) - 1, item=copy.deepcopy(item)
        )

    def start(self) -> list[Event]:
        return [
            self._event("response.created", response=self.whole()),
            self._event("response.in_progress", response=self.whole()),
        ]

    def feed(self, chunk: Chunk) -> list[Event]:
        events: list[Event] = []
        for kind, value in parts(chunk):
            if kind == "call":
                events += self._close() + self._call(value)
                continue
            if self.open is None or self.open["type"] != ITEMS[kind][0]:
                events += self._close() + self._open(kind)
            assert self.open is not None
            self.open["content"][0]["text"] += value
            events.append(
                self._event(
                    DELTA[self.open["type"]] + ".delta",
                    **self._where(),
                    delta=value,
                    **_no_logprobs(self.open),
                )
            )
        if chunk.get("done"):
            events += self._finish(chunk)
        return events

    def _where(self) -> dict[str, Any]:
        assert self.open is not None
        return {"item_id": self.open["id"], "output_index": len(self.output) - 1, "content_index": 0}

    def _open(self, kind: str) -> list[Event]:
        item_type, prefix, part = ITEMS[kind]
        item: dict[str, Any] = {
            "id": new_id(prefix),
            "type": item_type,
            "status": "in_progress",
            "content": [],
        }
        if item_type == "message":
            item["role"] = "assistant"
        else:
            item["summary"] = []
        events = [self._added(item)]
        self.open = item
        item["content"].append(copy.deepcopy(part))
        events.append(self._event("response.content_part.added", **self._where(), part=copy.deepcopy(part)))
        return events

    def _close(self, status: str = "completed") -> list[Event]:
        item = self.open
        if item is None:
            return []
        part = item["content"][0]
        events = [
            self._event(
                DELTA[item["type"]] + ".done", **self._where(), text=part["text"], **_no_logprobs(item)
            ),
            self._event("response.content_part.done", **self._where(), part=copy.deepcopy(part)),
        ]
        item["status"] = status
        events.append(
            self._event(
                "response.output_item.done", output_index=len(self.output) - 1, item=copy.deepcopy(item)
            )
        )
        self.open = None
        return events

    def _call(self, call: dict[str, Any]) -> list[Event]:
        args = arguments_json(call["arguments"])
        item = {
            "id": new_id("fc_"),
            "type": "function_call",
            "status": "in_progress",
            "call_id": call["id"] or new_id("call_"),
            "name": call["name"],
            "arguments": "",
        }
        events = [self._added(item)]
        where = {"item_id": item["id"], "output_index": len(self.output) - 1}
        events.append(self._event("response.function_call_arguments.delta", **where, delta=args))
        events.append(
            self._event("response.function_call_arguments.done", **where, name=call["name"], arguments=args)
        )
        item |= {"arguments": args, "status": "completed"}
        events.append(
            self._event("response.output_item.done", output_index=len(self.output) - 1, item=dict(item))
        )
        return events

    def _finish(self, final: Chunk) -> list[Event]:
        truncated = final.get("done_reason") == "length"
        events = self._close("incomplete" if truncated else "completed")
        prompt, generated = final.get("prompt_eval_count", 0), final.get("eval_count", 0)
        self.extra["usage"] = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": generated,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + generated,
        }
        self.extra["completed_at"] = int(time.time())
        if truncated:
            self.status = "incomplete"
            self.extra["incomplete_details"] = {"reason": "max_output_tokens"}
        else:
            self.status = "completed"
        return [*events, self._event("response." + self.status, response=self.whole())]

    def fail(self, exc: ForgeError) -> list[Event]:
        """After the status line, an error is an ``error`` event and a failed response."""
        message = printable(exc.message)
        self.status = "failed"
        self.extra["error"] = {"code": "server_error", "message": message}
        return [
            self._event("error", code="server_error", message=message, param=None),
            self._event("response.failed", response=self.whole()),
        ]

    def sse(self, event: Event) -> bytes:
        return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def responses(request: Request) -> Response:
    parsed = responses_request(await read_json(request))
    chunks = request.app.state.generation.chat(parsed.chat)
    reply = _Response(parsed.chat.model.display, parsed.echo)
    return await respond_events(reply, chunks, parsed.chat.stream)


routes = [Route("/v1/responses", responses, methods=["POST"])]
