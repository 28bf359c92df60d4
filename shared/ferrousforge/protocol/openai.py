"""OpenAI's chat and completion requests, translated to the Ollama-shaped requests the generation
handler takes: one handler, two dialects."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ferrousforge.errors import BadRequest
from ferrousforge.protocol.fields import as_int, check_ranges, require_object
from ferrousforge.protocol.fields import field as get
from ferrousforge.protocol.generate import ChatRequest, GenerateRequest

_OPTION_NAMES = {
    "temperature": "temperature",
    "top_p": "top_p",
    "seed": "seed",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}


RANGES = {"temperature": (0, 2), "top_p": (0, 1), "presence_penalty": (-2, 2), "frequency_penalty": (-2, 2)}


def _options(body: dict[str, Any], default_max: int | None, least: int = 1) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for theirs, ours in _OPTION_NAMES.items():
        if body.get(theirs) is not None:
            options[ours] = body[theirs]
    check_ranges(body, RANGES)
    # a null is no value (OpenAI's schema): {"max_tokens": 8, "max_completion_tokens": null} means 8
    limit = next(
        (body[key] for key in ("max_completion_tokens", "max_tokens") if body.get(key) is not None),
        default_max,
    )
    if limit is not None:
        whole = as_int(limit)
        if whole is None or whole < least:
            raise BadRequest(
                "'max_tokens' must be a positive integer" + (" (or 0 with echo)" if least == 0 else "")
            )
        options["num_predict"] = whole
    stop = body.get("stop")
    if stop is not None:
        options["stop"] = stop
    return options


MAX_CHOICES = 64  # choices a request: n, times the prompts of a completion request

R = TypeVar("R", ChatRequest, GenerateRequest)


@dataclass
class Choices(Generic[R]):
    """A request's generations, one a choice, in OpenAI's order (a prompt's choices together)."""

    requests: list[R]
    n: int  # choices a prompt
    usage: bool  # the stream ends with a usage chunk
    echo: bool = False  # completions: each choice's text starts with its prompt


def _n(body: dict[str, Any]) -> int:
    n = get(body, "n", int, 1)
    if n < 1:
        raise BadRequest("'n' must be a positive integer")
    return n


def _each_choice(requests: list[R], n: int) -> list[R]:
    """``n`` requests for each one, one a choice, in OpenAI's order (a prompt's choices together).
    With a ``seed``, choice ``i`` samples with ``seed + i``: the same answers again, not ``n`` alike."""
    if len(requests) * n > MAX_CHOICES:
        raise BadRequest(f"at most {MAX_CHOICES} choices a request ('n' times the prompts)")
    out = []
    for request in requests:
        seed = as_int((request.options or {}).get("seed"))
        for i in range(n):
            options = None if request.options is None else dict(request.options)
            if i and seed is not None and seed >= 0:
                options = {**(options or {}), "seed": seed + i}
            out.append(dataclasses.replace(request, options=options))
    return out


def _logprobs(body: dict[str, Any], chat: bool) -> dict[str, Any]:
    """OpenAI's logprobs request as Ollama's: chat says ``logprobs: true, top_logprobs: n``, the
    completions API ``logprobs: n``."""
    value = body.get("logprobs")
    if chat:
        top = get(body, "top_logprobs", int, 0)
        if value is False:  # said so: none (top_logprobs then asks for nothing)
            return {"logprobs": False, "top_logprobs": 0}
        return {"logprobs": bool(value) or top > 0, "top_logprobs": top}
    if value is None or value is False:
        return {}
    top = as_int(value)
    if top is None or top < 0:
        raise BadRequest("'logprobs' must be a number of alternatives (0 to 20)")
    return {"logprobs": True, "top_logprobs": top}


def _logit_bias(body: dict[str, Any]) -> dict[int, float]:
    """OpenAI's ``logit_bias``: token ids (as strings) → -100 to 100, added to those tokens' logits
    (-100 bans a token, 100 all but forces it)."""
    raw = get(body, "logit_bias", dict, {})
    if len(raw) > 1024:
        raise BadRequest("'logit_bias' may name at most 1024 tokens")
    bias: dict[int, float] = {}
    for key, value in raw.items():
        token = as_int(key) if not isinstance(key, str) else (int(key) if key.isdigit() else None)
        if token is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadRequest("'logit_bias' maps token ids to numbers from -100 to 100")
        if not -100 <= value <= 100:
            raise BadRequest(f"'logit_bias' for token {token} must be from -100 to 100")
        bias[token] = float(value)
    return bias


def _think(body: dict[str, Any]) -> object:
    """``reasoning_effort`` (or ``reasoning.effort``) as Ollama's ``think``."""
    effort = body.get("reasoning_effort")
    if effort is None and isinstance(body.get("reasoning"), dict):
        effort = body["reasoning"].get("effort")
    if effort is None:
        return None
    if effort in ("none", "minimal"):
        return False
    if effort in ("low", "medium", "high"):
        return effort
    raise BadRequest("'reasoning_effort' must be 'none', 'low', 'medium' or 'high'")


def _format(body: dict[str, Any]) -> str | dict[str, Any] | None:
    fmt = body.get("response_format")
    if fmt is None:
        return None
    return output_format(require_object(fmt, "'response_format'"), "response_format", "json_schema")


def output_format(fmt: dict[str, Any], where: str, schema_in: str = "") -> str | dict[str, Any] | None:
    """An OpenAI format object (chat's ``response_format``, Responses' ``text.format``) as the host's
    ``format``: None, "json" or the schema, found in ``fmt[schema_in]`` (or in ``fmt`` itself)."""
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        holder = require_object(fmt.get(schema_in), f"'{where}.{schema_in}'") if schema_in else fmt
        schema = holder.get("schema")
        if not isinstance(schema, dict):
            path = ".".join(p for p in (where, schema_in, "schema") if p)
            raise BadRequest(f"'{path}' must be a JSON schema object")
        return schema
    raise BadRequest(f"'{where}.type' must be 'text', 'json_object' or 'json_schema'")


def chat_request(raw: object) -> Choices[ChatRequest]:
    """The chat request, once for each of its ``n`` choices."""
    body = require_object(raw)
    messages = []
    for i, m in enumerate(get(body, "messages", list)):
        m = require_object(m, f"messages[{i}]")
        role = "system" if m.get("role") == "developer" else m.get("role")
        messages.append({**m, "role": role})
    if not messages:
        raise BadRequest("'messages' must not be empty")
    stream_options = get(body, "stream_options", dict, {})
    request = ChatRequest.parse(
        {
            "model": get(body, "model", str),
            "messages": messages,
            "stream": get(body, "stream", bool, False),
            "options": _options(body, None),
            "format": _format(body),
            "tools": get(body, "tools", list, []),
            "tool_choice": body.get("tool_choice"),
            "parallel_tool_calls": get(body, "parallel_tool_calls", bool, True),
            "think": _think(body),
            **_logprobs(body, chat=True),
        }
    )
    request.logit_bias = _logit_bias(body)
    n = _n(body)
    return Choices(_each_choice([request], n), n, bool(stream_options.get("include_usage")))


def _prompts(body: dict[str, Any]) -> list[str]:
    prompt = get(body, "prompt", (str, list))
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadRequest("'prompt' must be a string or a list of strings (token ids are not supported)")
    return prompts


def completion_request(raw: object) -> Choices[GenerateRequest]:
    """The completion request, once for each prompt and each of its ``n`` choices. ``echo`` repeats
    each prompt before its completion (with ``logprobs``, the prompt tokens' too; ``max_tokens: 0``
    scores the prompt alone)."""
    body = require_object(raw)
    echo = get(body, "echo", bool, False)
    stream_options = get(body, "stream_options", dict, {})
    n = _n(body)
    common = {
        "model": get(body, "model", str),
        "suffix": get(body, "suffix", str, ""),
        "raw": True,
        "stream": get(body, "stream", bool, False),
        "options": _options(body, 16, least=0 if echo else 1),  # OpenAI's default max_tokens: 16
        "format": _format(body),
        **_logprobs(body, chat=False),
    }
    requests = [GenerateRequest.parse({**common, "prompt": p}) for p in _prompts(body)]
    bias = _logit_bias(body)
    for request in requests:
        request.empty_loads = False  # "" generates as from the start of a new document
        request.prompt_logprobs = echo and request.logprobs
        request.logit_bias = bias
    return Choices(_each_choice(requests, n), n, bool(stream_options.get("include_usage")), echo)
