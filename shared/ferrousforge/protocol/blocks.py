"""Reading Ollama chat chunks for the dialects that answer in content blocks (OpenAI's Responses,
Anthropic's Messages): each chunk's reasoning, text and tool calls, in that order."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


def parts(chunk: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """("thinking", text), ("text", text) and ("call", {id, name, arguments}) of one chunk."""
    message = chunk.get("message") or {}
    if message.get("thinking"):
        yield "thinking", message["thinking"]
    if message.get("content"):
        yield "text", message["content"]
    for call in message.get("tool_calls") or []:
        fn = call["function"]
        yield "call", {"id": call.get("id"), "name": fn["name"], "arguments": fn.get("arguments") or {}}


def arguments_json(arguments: object) -> str:
    """A call's arguments as JSON text (they come as an object; text is passed through)."""
    return arguments if isinstance(arguments, str) else json.dumps(arguments)
