"""Anthropic's Messages API request (/v1/messages), translated to the Ollama chat request the
generation handler takes."""

from __future__ import annotations

from typing import Any

from ferrousforge.errors import BadRequest
from ferrousforge.protocol.fields import as_int, check_ranges, require_object, string_list
from ferrousforge.protocol.fields import field as get
from ferrousforge.protocol.generate import ChatRequest


def _text(value: object, where: str) -> str:
    """Text from a string or a list of text blocks (a system prompt, a tool result)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise BadRequest(f"{where} must be a string or a list of text blocks")
    parts = []
    for i, raw in enumerate(value):
        block = require_object(raw, f"{where}[{i}]")
        if block.get("type") != "text":
            raise BadRequest(f"{where}[{i}] must be a text block")
        parts.append(get(block, "text", str))
    return "".join(parts)


def _image(block: dict[str, Any], where: str) -> str:
    source = require_object(block.get("source"), f"{where}.source")
    if source.get("type") != "base64":
        raise BadRequest(f"{where}.source.type must be 'base64' (remote images are not fetched)")
    return str(get(source, "data", str))


def _message(raw: object, i: int, names: dict[str, str]) -> list[dict[str, Any]]:
    """One Anthropic message as Ollama messages: tool results become ``tool`` messages first."""
    where = f"messages[{i}]"
    m = require_object(raw, where)
    role = m.get("role")
    if role not in ("user", "assistant"):
        raise BadRequest(f"{where}.role must be 'user' or 'assistant'")
    content = m.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise BadRequest(f"{where}.content must be a string or a list of content blocks")
    results: list[dict[str, Any]] = []
    text, images, calls, thoughts = [], [], [], []
    for j, raw_block in enumerate(content):
        at = f"{where}.content[{j}]"
        block = require_object(raw_block, at)
        kind = block.get("type")
        if kind == "text":
            text.append(get(block, "text", str))
        elif kind == "image":
            images.append(_image(block, at))
        elif kind == "tool_use" and role == "assistant":
            call_id, name = get(block, "id", str), get(block, "name", str)
            names[call_id] = name
            calls.append({"id": call_id, "function": {"name": name, "arguments": get(block, "input", dict)}})
        elif kind == "tool_result" and role == "user":
            result = _text(block.get("content") or "", f"{at}.content")
            if block.get("is_error"):
                result = f"Error: {result}"
            call_id = get(block, "tool_use_id", str)
            results.append(
                {
                    "role": "tool",
                    "content": result,
                    "tool_name": names.get(call_id, ""),
                    "tool_call_id": call_id,
                }
            )
        elif kind == "thinking" and role == "assistant":
            thoughts.append(get(block, "thinking", str))
        elif kind != "redacted_thinking":
            raise BadRequest(f"{at}.type must be text, image, tool_use (assistant) or tool_result (user)")
    if text or images or calls or not results:
        joined = {"content": "".join(text), "thinking": "".join(thoughts)}
        results.append({"role": role, **joined, "images": images, "tool_calls": calls})
    return results


def _tools(value: list[Any]) -> list[dict[str, Any]]:
    tools = []
    for i, raw in enumerate(value):
        tool = require_object(raw, f"tools[{i}]")
        if tool.get("type") not in (None, "custom"):
            raise BadRequest(
                f"tools[{i}]: only custom tools {{name, description, input_schema}} are supported"
            )
        fn = {"name": get(tool, "name", str), "parameters": get(tool, "input_schema", dict)}
        if tool.get("description") is not None:
            fn["description"] = get(tool, "description", str)
        tools.append({"type": "function", "function": fn})
    return tools


def _tool_choice(value: object) -> object:
    if value is None:
        return None
    choice = require_object(value, "'tool_choice'")
    kind = choice.get("type")
    if kind in ("auto", "none"):
        return kind
    if kind == "any":
        return "required"
    if kind == "tool":
        return {"type": "function", "function": {"name": get(choice, "name", str)}}
    raise BadRequest("'tool_choice.type' must be auto, any, tool or none")


def _no_parallel(value: object) -> bool:
    """``tool_choice.disable_parallel_tool_use``: at most one tool use."""
    return isinstance(value, dict) and get(value, "disable_parallel_tool_use", bool, False)


def _think(value: object) -> bool | None:
    if value is None:
        return None
    kind = require_object(value, "'thinking'").get("type")
    if kind not in ("enabled", "adaptive", "between_tools", "disabled"):
        raise BadRequest("'thinking.type' must be enabled, adaptive or disabled")
    return kind != "disabled"


def _format(body: dict[str, Any]) -> dict[str, Any] | None:
    config = get(body, "output_config", dict, {})
    fmt = config.get("format")
    if fmt is None:
        return None
    fmt = require_object(fmt, "'output_config.format'")
    if fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise BadRequest("'output_config.format' must be {type: 'json_schema', schema: {...}}")
    return fmt["schema"]


def _options(body: dict[str, Any], counting: bool) -> dict[str, Any]:
    if counting:  # the prompt is only tokenized; sampling fields are not count_tokens' own
        return {}
    check_ranges(body, {"temperature": (0, 1), "top_p": (0, 1)})  # Anthropic's bounds
    options = {k: body[k] for k in ("temperature", "top_p", "top_k") if body.get(k) is not None}
    if body.get("max_tokens") is None:
        raise BadRequest("'max_tokens' is required")
    limit = as_int(body["max_tokens"])
    if limit is None or limit < 1:
        raise BadRequest("'max_tokens' must be a positive integer")
    options["num_predict"] = limit
    stops = string_list(body, "stop_sequences")
    if stops:
        options["stop"] = stops
    return options


def messages_request(raw: object, counting: bool = False) -> ChatRequest:
    """The chat request for a Messages body; ``counting`` for /v1/messages/count_tokens (no max_tokens)."""
    body = require_object(raw)
    if body.get("mcp_servers"):
        raise BadRequest("'mcp_servers' is not supported")
    names: dict[str, str] = {}  # tool_use id → tool name, for the results
    messages = [out for i, m in enumerate(get(body, "messages", list)) for out in _message(m, i, names)]
    if not messages:
        raise BadRequest("'messages' must not be empty")
    system = _text(body["system"], "'system'") if body.get("system") is not None else ""
    if system:
        messages.insert(0, {"role": "system", "content": system})
    chat = {
        "model": get(body, "model", str),
        "messages": messages,
        "tools": _tools(get(body, "tools", list, [])),
        "tool_choice": _tool_choice(body.get("tool_choice")),
        "parallel_tool_calls": not _no_parallel(body.get("tool_choice")),
        "format": _format(body),
        "options": _options(body, counting),
        "stream": not counting and get(body, "stream", bool, False),
    }
    think = _think(body.get("thinking"))
    if think is not None:
        chat["think"] = think
    return ChatRequest.parse(chat)
