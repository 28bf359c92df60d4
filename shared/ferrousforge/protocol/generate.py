"""Ollama's /api/generate and /api/chat requests."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

from ferrousforge.errors import BadRequest
from ferrousforge.names import ModelName
from ferrousforge.protocol.fields import field as get
from ferrousforge.protocol.fields import require_object, string_list, token_ids

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Common:
    model: ModelName
    options: dict[str, Any] | None
    keep_alive: object
    stream: bool
    format: str | dict[str, Any] | None


def _common(body: dict[str, Any]) -> dict[str, Any]:
    fmt = get(body, "format", (str, dict), None)
    if isinstance(fmt, str) and fmt not in ("", "json"):
        raise BadRequest("'format' must be \"json\" or a JSON schema object")
    return {
        "model": ModelName.parse(get(body, "model", str)),
        "options": get(body, "options", dict, None),
        "keep_alive": get(body, "keep_alive", (str, int, float), None),
        "stream": get(body, "stream", bool, True),
        "format": fmt or None,
    }


@dataclass
class GenerateRequest(Common):
    prompt: str = ""
    suffix: str = ""
    system: str | None = None
    template: str | None = None
    raw: bool = False
    images: list[str] = field(default_factory=list)
    context: list[int] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: object) -> GenerateRequest:
        body = require_object(raw)
        context = token_ids(get(body, "context", list, []))
        if context is None:
            raise BadRequest("'context' must be a list of token ids")
        return cls(
            **_common(body),
            prompt=get(body, "prompt", str, ""),
            suffix=get(body, "suffix", str, ""),
            system=get(body, "system", str, None),
            template=get(body, "template", str, None),
            raw=get(body, "raw", bool, False),
            images=string_list(body, "images"),
            context=context,
        )


@dataclass
class Message:
    role: str
    content: str
    images: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    name: str | None = None  # a tool result's tool

    def to_template(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        if self.name:
            out["name"] = self.name
        return out


@dataclass
class ChatRequest(Common):
    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: object = None  # "none" | "auto" | "required" | {type: function, function: {name}}

    @classmethod
    def parse(cls, raw: object) -> ChatRequest:
        body = require_object(raw)
        messages = []
        for i, item in enumerate(get(body, "messages", list, [])):
            m = require_object(item, f"messages[{i}]")
            role = get(m, "role", str)
            if role not in ROLES:
                raise BadRequest(f"messages[{i}].role must be one of {', '.join(ROLES)}")
            content = get(m, "content", (str, list), "") or ""
            if isinstance(content, list):  # OpenAI-style content parts: keep the text
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            calls = get(m, "tool_calls", list, [])
            for call in calls:
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise BadRequest(f"messages[{i}].tool_calls must hold {{function: {{name, arguments}}}}")
                if isinstance(fn.get("arguments"), str):  # OpenAI's form: JSON text (kept as is if not)
                    with contextlib.suppress(ValueError):
                        fn["arguments"] = json.loads(fn["arguments"])
            name = get(m, "tool_name", str, None) or get(m, "name", str, None)
            messages.append(Message(role, content, string_list(m, "images"), calls, name))
        tools = get(body, "tools", list, [])
        if not all(isinstance(t, dict) for t in tools):
            raise BadRequest("'tools' must be a list of objects")
        return cls(**_common(body), messages=messages, tools=tools, tool_choice=body.get("tool_choice"))
