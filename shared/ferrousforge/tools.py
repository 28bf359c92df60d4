"""Tool calling for any chat model.

Models whose chat template renders ``tools`` itself get the definitions through the template and
answer in their own markup (parsed by ferrousforge.reply). For the others (Gemma's turn format, plain
templates) the definitions go into the system message, earlier calls and results are written as
ordinary turns, and generation is constrained (a grammar from a JSON schema) so that each call, one
JSON object per line, names one tool with arguments matching its parameter schema.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ferrousforge.errors import BadRequest
from ferrousforge.protocol.schema import check_schema

INSTRUCTIONS = (
    "You can call these tools:\n{tools}\n"
    'To call a tool, reply with only a JSON object: {{"name": "<tool name>", "arguments": {{...}}}}; '
    "to call several, one such object per line. Otherwise reply normally."
)


TOOL_NAME = r"[A-Za-z0-9_.-]{1,64}"  # as OpenAI's; a name is a literal in the call grammar


def check_tools(tools: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Tool definitions by name, in OpenAI's and Ollama's shape: {type: function, function: {...}}."""
    by_name: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise BadRequest(f"tools[{i}] must be {{type: 'function', function: {{name, parameters}}}}")
        if not re.fullmatch(TOOL_NAME, fn["name"]):
            raise BadRequest(f"tools[{i}].function.name must be 1 to 64 letters, digits, '_', '.' or '-'")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise BadRequest(f"tools[{i}].function.parameters must be a JSON schema object")
        check_schema(params, f"tools[{i}].function.parameters")
        by_name[fn["name"]] = {**fn, "parameters": params}
    return by_name


def choose(tools: dict[str, dict[str, Any]], choice: object) -> tuple[dict[str, dict[str, Any]], bool]:
    """Apply ``tool_choice``: the tools still offered, and whether a call is required."""
    if choice in (None, "auto"):
        return tools, False
    if choice == "none":
        return {}, False
    if choice == "required":
        if not tools:
            raise BadRequest("tool_choice 'required' needs tools")
        return tools, True
    if isinstance(choice, dict):
        name = (
            (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        )
        if name not in tools:
            raise BadRequest(f"tool_choice names an unknown tool '{name}'")
        return {name: tools[name]}, True
    raise BadRequest("tool_choice must be 'none', 'auto', 'required' or {type: 'function', function: {name}}")


def call_schema(tools: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one call to any of these tools."""
    variants = [
        {
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": fn["parameters"]},
            "required": ["name", "arguments"],
        }
        for name, fn in tools.items()
    ]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def as_plain_turns(messages: list[dict[str, Any]], tools: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for a template that knows nothing of tools: definitions in the system message, calls
    as assistant JSON, results as user turns (the results of one round in one turn, as templates
    that check that roles alternate want)."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m["role"] == "tool":
            label = f" from {m['name']}" if m.get("name") else ""
            result = f"Tool result{label}: {m['content']}"
            if i and messages[i - 1]["role"] == "tool":
                out[-1] = {"role": "user", "content": out[-1]["content"] + "\n\n" + result}
            else:
                out.append({"role": "user", "content": result})
        elif m["role"] == "assistant" and m.get("tool_calls"):
            calls = [
                {"name": c["function"]["name"], "arguments": c["function"].get("arguments", {})}
                for c in m["tool_calls"]
            ]
            out.append({"role": "assistant", "content": "\n".join(json.dumps(c) for c in calls)})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    if tools:
        described = json.dumps(
            [
                {"name": n, "description": fn.get("description", ""), "parameters": fn["parameters"]}
                for n, fn in tools.items()
            ]
        )
        text = INSTRUCTIONS.format(tools=described)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + text}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out
