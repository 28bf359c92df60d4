"""OpenAI's Responses API request (/v1/responses), translated to the Ollama chat request the
generation handler takes. Nothing is stored: a conversation travels whole in ``input``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ferrousforge.errors import BadRequest
from ferrousforge.protocol.fields import as_int, check_ranges, require_object
from ferrousforge.protocol.fields import field as get
from ferrousforge.protocol.generate import ChatRequest, content_parts
from ferrousforge.protocol.openai import RANGES, output_format

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
REFUSED = {  # fields that need state or features this server does not keep
    "previous_response_id": "'previous_response_id' is not supported: responses are not stored, "
    "send the whole conversation in 'input'",
    "conversation": "'conversation' is not supported: send the whole conversation in 'input'",
    "background": "'background' responses are not supported",
    "prompt": "stored prompts ('prompt') are not supported",
    "top_logprobs": "'top_logprobs' is not supported",
}


@dataclass
class ResponsesRequest:
    chat: ChatRequest
    echo: dict[str, Any]  # request fields the response object repeats


def _content(value: object, where: str) -> tuple[str, list[str]]:
    """A message's text and images from a string or a list of content parts."""
    if isinstance(value, str):
        return value, []
    if not isinstance(value, list):
        raise BadRequest(f"{where}.content must be a string or a list of content parts")
    return content_parts(value, where)


def _reasoning(item: dict[str, Any]) -> str:
    """An earlier reply's reasoning text (its raw content, else its summary)."""
    parts = item.get("content") or item.get("summary") or []
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


def _arguments(text: object, where: str) -> object:
    """A call's arguments: JSON text as an object (text that is not JSON is kept as it is)."""
    if not isinstance(text, str):
        raise BadRequest(f"{where}.arguments must be a string of JSON")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _messages(value: object) -> list[dict[str, Any]]:
    """Ollama messages from ``input``: a string, or message, reasoning, function_call and
    function_call_output items (reasoning goes with the assistant turn after it)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise BadRequest("'input' must be a string or a list of items")
    messages: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # call_id → tool name, for the results
    thought = ""  # a reasoning item's text, for the next assistant turn
    for i, raw in enumerate(value):
        where = f"input[{i}]"
        item = require_object(raw, where)
        kind = item.get("type", "message")
        if kind == "message":
            role = ROLES.get(item["role"]) if isinstance(item.get("role"), str) else None
            if role is None:
                raise BadRequest(f"{where}.role must be user, assistant, system or developer")
            text, images = _content(item.get("content"), where)
            messages.append({"role": role, "content": text, "images": images})
            if role == "assistant":
                messages[-1]["thinking"], thought = thought, ""
        elif kind == "function_call":
            name, call_id = get(item, "name", str), get(item, "call_id", str)
            names[call_id] = name
            call = {
                "id": call_id,
                "function": {"name": name, "arguments": _arguments(item.get("arguments"), where)},
            }
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)  # text and calls: one assistant turn
            else:
                messages.append(
                    {"role": "assistant", "content": "", "tool_calls": [call], "thinking": thought}
                )
                thought = ""
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _content(output, where)[0]
            call_id = get(item, "call_id", str)
            tool = names.get(call_id, "")
            messages.append({"role": "tool", "content": text, "tool_name": tool, "tool_call_id": call_id})
        elif kind == "reasoning":
            thought += _reasoning(item)
        else:
            raise BadRequest(f"{where}.type must be message, function_call or function_call_output")
    if not messages:
        raise BadRequest("'input' must not be empty")
    return messages


def _tools(value: list[Any]) -> list[dict[str, Any]]:
    tools = []
    for i, raw in enumerate(value):
        tool = require_object(raw, f"tools[{i}]")
        if tool.get("type") != "function":
            raise BadRequest(f"tools[{i}]: only function tools are supported")
        fn = {"name": get(tool, "name", str)} | {
            k: tool[k] for k in ("description", "parameters") if tool.get(k) is not None
        }
        tools.append({"type": "function", "function": fn})
    return tools


def _tool_choice(value: object) -> object:
    if value is None or value in ("none", "auto", "required"):
        return value
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str):
        return {"type": "function", "function": {"name": value["name"]}}
    raise BadRequest("'tool_choice' must be 'none', 'auto', 'required' or {type: 'function', name}")


def _format(text: dict[str, Any]) -> str | dict[str, Any] | None:
    fmt = require_object(text.get("format") or {"type": "text"}, "'text.format'")
    return output_format(fmt, "text.format")


def _think(reasoning: dict[str, Any]) -> bool | str | None:
    effort = reasoning.get("effort")
    if effort is None:
        return None
    if effort not in EFFORTS:
        raise BadRequest(f"'reasoning.effort' must be one of {', '.join(EFFORTS)}")
    if effort in ("none", "minimal"):
        return False
    return "high" if effort == "xhigh" else effort


def _truncation(body: dict[str, Any]) -> str:
    """Said back as given: a chat too long for the window loses its oldest turns either way."""
    value = get(body, "truncation", str, "disabled")
    if value not in ("auto", "disabled"):
        raise BadRequest("'truncation' must be 'auto' or 'disabled'")
    return str(value)


def _options(body: dict[str, Any]) -> dict[str, Any]:
    check_ranges(body, RANGES)
    options = {k: body[k] for k in ("temperature", "top_p") if body.get(k) is not None}
    limit = body.get("max_output_tokens")
    if limit is not None:
        whole = as_int(limit)
        if whole is None or whole < 1:
            raise BadRequest("'max_output_tokens' must be a positive integer")
        options["num_predict"] = whole
    return options


def responses_request(raw: object) -> ResponsesRequest:
    body = require_object(raw)
    for key, why in REFUSED.items():
        if body.get(key):
            raise BadRequest(why)
    messages = _messages(body.get("input"))
    instructions = get(body, "instructions", str, None)
    if instructions:
        messages.insert(0, {"role": "system", "content": instructions})
    text = get(body, "text", dict, {})
    reasoning = get(body, "reasoning", dict, {})
    tools = get(body, "tools", list, [])
    chat = {
        "model": get(body, "model", str),
        "messages": messages,
        "tools": _tools(tools),
        "tool_choice": _tool_choice(body.get("tool_choice")),
        "parallel_tool_calls": get(body, "parallel_tool_calls", bool, True),
        "format": _format(text),
        "options": _options(body),
        "stream": get(body, "stream", bool, False),
    }
    think = _think(reasoning)
    if think is not None:
        chat["think"] = think
    echo = {
        "instructions": instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "tools": tools,
        "tool_choice": body.get("tool_choice") or "auto",
        "parallel_tool_calls": get(body, "parallel_tool_calls", bool, True),
        "truncation": _truncation(body),
        "text": {"format": text.get("format") or {"type": "text"}},
        "reasoning": {"effort": reasoning.get("effort"), "summary": None},
        "metadata": get(body, "metadata", dict, {}),
        "user": get(body, "user", str, None),
    }
    return ResponsesRequest(ChatRequest.parse(chat), echo)
