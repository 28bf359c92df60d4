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
from ferrousforge.protocol.schema import check_schema

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Common:
    model: ModelName
    options: dict[str, Any] | None
    keep_alive: object
    stream: bool
    format: str | dict[str, Any] | None
    think: bool | str | None  # None: as the model does by default; "low" | "medium" | "high"
    logprobs: bool
    top_logprobs: int
    truncate: bool  # a prompt longer than the window loses its oldest turns (else a 400)
    shift: bool  # a full window drops older tokens during generation (else the reply ends: "length")
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id → added to its logit (OpenAI's)


THINK_LEVELS = ("low", "medium", "high")


def think_value(value: object) -> bool | str | None:
    if value is None or isinstance(value, bool):
        return value
    if value in THINK_LEVELS:
        return str(value)
    raise BadRequest('\'think\' must be true, false, "low", "medium" or "high"')


def _common(body: dict[str, Any]) -> dict[str, Any]:
    fmt = get(body, "format", (str, dict), None)
    if isinstance(fmt, str) and fmt not in ("", "json"):
        raise BadRequest("'format' must be \"json\" or a JSON schema object")
    check_schema(fmt, "'format'")
    top = get(body, "top_logprobs", int, 0)
    if not 0 <= top <= 20:
        raise BadRequest("'top_logprobs' must be between 0 and 20")
    return {
        "model": ModelName.parse(get(body, "model", str)),
        "options": get(body, "options", dict, None),
        "keep_alive": get(body, "keep_alive", (str, int, float), None),
        "stream": get(body, "stream", bool, True),
        "format": fmt or None,
        "think": think_value(body.get("think")),
        "logprobs": get(body, "logprobs", bool, False) or top > 0,
        "top_logprobs": top,
        "truncate": get(body, "truncate", bool, True),
        "shift": get(body, "shift", bool, True),
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
    prompt_logprobs: bool = False  # the prompt's token logprobs too (OpenAI completions' echo)
    empty_loads: bool = True  # an empty prompt only loads the model (Ollama's); else it is a text's start

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
    tool_call_id: str | None = None  # the call a tool result answers
    thinking: str | None = None  # an earlier reply's thinking

    def to_template(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = self.tool_calls
        if self.name:
            out["name"] = self.name
        if self.tool_call_id:
            out["tool_call_id"] = self.tool_call_id
        if self.thinking:
            out["reasoning_content"] = out["thinking"] = self.thinking
        return out


def content_parts(parts: list[Any], where: str) -> tuple[str, list[str]]:
    """OpenAI-style content parts: the text, and the images (base64) of ``image_url`` data URLs."""
    text, images = [], []
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            raise BadRequest(f"{where}.content[{j}] must be an object")
        kind = part.get("type", "text")
        if kind == "refusal":  # an assistant's refusal (OpenAI's): its text, as said
            part = {"text": part.get("refusal", "")}
            kind = "text"
        if kind in ("text", "input_text", "output_text"):
            value = part.get("text", "")
            if not isinstance(value, str):
                raise BadRequest(f"{where}.content[{j}].text must be a string")
            text.append(value)
        elif kind in ("image_url", "input_image"):
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str) or not url.startswith("data:") or "," not in url:
                raise BadRequest(
                    f"{where}.content[{j}]: images must be data URLs (data:image/png;base64,...)"
                )
            images.append(url.split(",", 1)[1])
        else:
            raise BadRequest(f"{where}.content[{j}].type '{str(kind)[:40]}' is not supported")
    return "".join(text), images


@dataclass
class ChatRequest(Common):
    messages: list[Message] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: object = None  # "none" | "auto" | "required" | {type: function, function: {name}}
    parallel_tool_calls: bool = (
        True  # False: one call at most (OpenAI's; Anthropic's disable_parallel_tool_use)
    )

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
            images = string_list(m, "images")
            if isinstance(content, list):
                content, more = content_parts(content, f"messages[{i}]")
                images += more
            calls = get(m, "tool_calls", list, [])
            for call in calls:
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise BadRequest(f"messages[{i}].tool_calls must hold {{function: {{name, arguments}}}}")
                if isinstance(fn.get("arguments"), str):  # OpenAI's form: JSON text (kept as is if not)
                    with contextlib.suppress(ValueError, RecursionError):
                        fn["arguments"] = json.loads(fn["arguments"])
            name = get(m, "tool_name", str, None) or get(m, "name", str, None)
            call_id = get(m, "tool_call_id", str, None)
            thought = get(m, "thinking", str, None) or get(m, "reasoning_content", str, None)
            messages.append(Message(role, content, images, calls, name, call_id, thought))
        tools = get(body, "tools", list, [])
        if not all(isinstance(t, dict) for t in tools):
            raise BadRequest("'tools' must be a list of objects")
        return cls(
            **_common(body),
            messages=messages,
            tools=tools,
            tool_choice=body.get("tool_choice"),
            parallel_tool_calls=get(body, "parallel_tool_calls", bool, True),
        )
