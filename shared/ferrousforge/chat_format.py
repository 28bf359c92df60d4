"""Prompt templates: a model's own Jinja2 chat template, a family format, or Ollama's Go-style subset.

Every template is rendered as a Jinja2 chat template over ``messages`` (the convention of Hugging Face
and GGUF ``tokenizer.chat_template``). Ollama-style templates (``{{ .System }}``, ``{{ .Prompt }}``,
``{{ if .System }}…{{ end }}``) are translated to Jinja2 first.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from functools import lru_cache
from typing import Any

from ferrousforge import gotemplate
from ferrousforge.errors import BadRequest

# Gemma's turn format (Gemma 1-3): system text is folded into the first user turn.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '')"
    " + (message['content'] | trim) + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

# Used when a model has no template and no known family: the text of each message, in order.
PLAIN_TEMPLATE = (
    "{{ bos_token }}{%- for message in messages -%}{{ message['content'] }}"
    "{%- if not loop.last %}\n\n{% endif -%}{%- endfor -%}"
)

FAMILY_TEMPLATES = {"gemma": GEMMA_TEMPLATE, "gemma2": GEMMA_TEMPLATE, "gemma3": GEMMA_TEMPLATE}
FAMILY_STOPS = {"gemma": ["<end_of_turn>"], "gemma2": ["<end_of_turn>"], "gemma3": ["<end_of_turn>"]}


def family_template(family: str | None) -> str | None:
    return FAMILY_TEMPLATES.get(family or "")


# What only Go writes: a comment or a keyword opening an action, a capitalized field (.Prompt),
# a $variable, or the dot alone
_GO_SIGNS = re.compile(
    r"\{\{-?\s*(/\*|(if|else|end|range|with|define|template|block|break|continue)\b)"
    r"|\{\{(?:[^{}]*?[\s(|])?(\.[A-Z]|\$[\w.$\s]|\.\s*-?\}\})"
)


@lru_cache(maxsize=64)
def is_go_template(template: str) -> bool:
    """Whether a template is Go's (Ollama's) rather than Jinja's."""
    return bool(_GO_SIGNS.search(template))


def knows_tools(template: str | None) -> bool:
    """Whether a template writes tool definitions itself (Jinja's ``tools``, Go's ``.Tools``)."""
    if not template:
        return False
    if not is_go_template(template):
        return "tools" in template
    try:
        return "tools" in _go_parse(template).names
    except BadRequest:
        return False


def go_call_tag(template: str | None) -> str | None:
    """What an Ollama template writes before its tool calls, found as Ollama finds it: the first text
    inside its ``{{ if .ToolCalls }}``, up to the JSON (``[TOOL_CALLS]``, ``<|tool_call|>``). None
    when the template writes calls as bare JSON, or is not Go."""
    if not template or not is_go_template(template):
        return None
    try:
        nodes = _go_parse(template).nodes
    except BadRequest:
        return None
    branch = _tool_calls_branch(nodes)
    text = _first_text(branch.body) if branch else None
    tag = (text or "").partition("{")[0].strip().removesuffix("[").strip()
    return tag or None


def _tool_calls_branch(nodes: list[Any]) -> gotemplate.Branch | None:
    for node in nodes:
        if isinstance(node, gotemplate.Branch):
            args = [arg for command in node.pipe.commands for arg in command]
            if node.kind == "if" and any(a.kind == "field" and "ToolCalls" in a.chain for a in args):
                return node
            if found := _tool_calls_branch(node.body) or _tool_calls_branch(node.orelse):
                return found
    return None


def _first_text(nodes: list[Any]) -> str | None:
    for node in nodes:
        if isinstance(node, str):
            if node.strip():
                return node
        elif isinstance(node, gotemplate.Branch):
            return _first_text(node.body) or _first_text(node.orelse)
        else:
            return None
    return None


@lru_cache(maxsize=64)
def _go_turn_end(template: str) -> gotemplate.Template:
    """The template run for a chat's last turn: cut after its .Response, as Ollama cuts it."""
    return gotemplate.cut_after(_go_parse(template), "Response")


@lru_cache(maxsize=64)
def _go_parse(template: str) -> gotemplate.Template:
    """A Go template as Ollama parses one: with ``{{ .Response }}`` after it when it reads neither
    .Messages nor .Response (so that earlier replies are in the prompt)."""
    parsed = gotemplate.parse(template)
    if not parsed.names & {"messages", "response"}:
        response = gotemplate.Arg("field", chain=["Response"])
        parsed.nodes.append(gotemplate.Action(gotemplate.Pipe([[response]])))
    return parsed


# What a template may spend: templates come with requests too, so a loop or a product can't run away.
MAX_TEMPLATE_ITEMS = 100_000  # the longest range or repeated string or list a template may make
RENDER_SECONDS = 2.0


class _Deadline:
    """The time the render running in this thread must end by (checked as loops over range() step)."""

    local = threading.local()

    @classmethod
    def check(cls) -> None:
        if time.monotonic() > getattr(cls.local, "until", float("inf")):
            raise BadRequest(f"the template took longer than {RENDER_SECONDS:g} s to render")


class _Steps:
    """range() for templates: bounded in length, and every step checks the render's deadline."""

    def __init__(self, *args: int) -> None:
        self.steps = range(*args)
        if len(self.steps) > MAX_TEMPLATE_ITEMS:
            raise BadRequest(f"template: range() longer than {MAX_TEMPLATE_ITEMS}")

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[int]:
        for i, step in enumerate(self.steps):
            if i % 256 == 0:
                _Deadline.check()
            yield step


def _product_size(left: object, right: object) -> int:
    """How long ``left * right`` would be when it repeats a string or a list (else 0)."""
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(times, int):
            return len(seq) * times
    return 0


@lru_cache(maxsize=64)
def _compile(template: str) -> Any:
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise BadRequest(f"chat template: {message}")

    class Sandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
                raise BadRequest("template: an exponent larger than 64")
            if operator == "*" and _product_size(left, right) > MAX_TEMPLATE_ITEMS:
                raise BadRequest(f"template: a repeated string or list longer than {MAX_TEMPLATE_ITEMS}")
            return super().call_binop(context, operator, left, right)

    env = Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["range"] = _Steps
    try:
        return env.from_string(template)
    except TemplateError as exc:
        raise BadRequest(f"invalid template: {exc}") from exc
    except RecursionError:
        raise BadRequest("invalid template: nested too deeply") from None


def check_template(template: str) -> None:
    """A 400 for a template that cannot render (Jinja or Go that doesn't parse)."""
    _go_parse(template) if is_go_template(template) else _compile(template)


def render(
    template: str,
    messages: list[dict[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
    strip_bos: bool = True,
    prefill: str = "",
    **extra: Any,
) -> str:
    """Render a chat template; a leading BOS is dropped when the tokenizer adds its own (``strip_bos``:
    not for a model whose tokenizer adds none, as SmolLM2's, whose BOS opens each turn). ``extra``
    are more variables templates read (``enable_thinking``, ``reasoning_effort``). With ``prefill``
    (``prefill_of`` the chat) the prompt ends inside the final message, for the reply to go on with it."""
    go = is_go_template(template)
    if go:
        text = _render_go(template, messages, tools, extra)
    else:
        text = _render_jinja(
            template, messages, bos_token, eos_token, add_generation_prompt, tools, prefill, extra
        )
    if strip_bos and bos_token and text.startswith(bos_token):
        text = text[len(bos_token) :]
    if not prefill or (go and "messages" not in _go_parse(template).names):
        return text  # (a template of turns ends with the final message's text itself)
    return continuing(text, prefill)


def _render_jinja(
    template: str,
    messages: list[dict[str, Any]],
    bos_token: str,
    eos_token: str,
    add_generation_prompt: bool,
    tools: list[dict[str, Any]] | None,
    prefill: str,
    extra: dict[str, Any],
) -> str:
    from jinja2 import TemplateError

    compiled = _compile(template)
    variables = {
        "messages": messages,
        "bos_token": bos_token,
        "eos_token": eos_token,
        "add_generation_prompt": add_generation_prompt and not prefill,
        "tools": tools,
        **extra,
    }
    _Deadline.local.until = time.monotonic() + RENDER_SECONDS
    try:
        return str(compiled.render(**variables))
    except TemplateError as exc:
        raise BadRequest(f"template failed to render: {exc}") from exc
    except RecursionError:
        raise BadRequest("template failed to render: nested too deeply") from None
    finally:
        _Deadline.local.until = float("inf")


def _render_go(
    template: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, extra: dict[str, Any]
) -> str:
    """An Ollama template, executed as Ollama does: once over the whole chat when it reads .Messages;
    else once for each exchange (a system text, a prompt, a response) and, for the last, only up to
    its .Response (where the reply goes; a final assistant message is its start)."""
    parsed = _go_parse(template)
    thinking = {
        "Think": bool(extra.get("think")),
        "ThinkLevel": str(extra.get("think_level") or ""),
        "IsThinkSet": bool(extra.get("think_set")),
    }
    collated = _collate(messages)
    if "messages" in parsed.names:
        system = "\n\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "system")
        data = {
            "System": system,
            "Messages": [go_message(m) for m in collated],
            "Tools": go_tools(tools),
            "Response": "",
            **thinking,
        }
        return gotemplate.execute(parsed, data, RENDER_SECONDS)
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}
    for m in collated:
        key = {"system": "System", "user": "Prompt", "assistant": "Response"}.get(str(m.get("role")))
        if key is None:  # (tool results have no place in these templates)
            continue
        if (key == "System" and (turn["Prompt"] or turn["Response"])) or (
            key == "Prompt" and turn["Response"]
        ):
            out.append(gotemplate.execute(parsed, {**turn, **thinking}, RENDER_SECONDS))
            turn = {"System": "", "Prompt": "", "Response": ""}
        turn[key] = str(m.get("content") or "")
    out.append(gotemplate.execute(_go_turn_end(template), {**turn, **thinking}, RENDER_SECONDS))
    return "".join(out)


def _collate(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat as Ollama's templates see it: a run of messages of one role joined (but not tool
    results, each of which keeps its own name and call)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if out and out[-1].get("role") == m.get("role") and m.get("role") != "tool":
            joined = str(out[-1].get("content") or "") + "\n\n" + str(m.get("content") or "")
            out[-1] = {**out[-1], "content": joined}
        else:
            out.append(m)
    return out


def go_message(m: dict[str, Any]) -> gotemplate.Struct:
    """A chat message as Ollama's templates read one (.Role, .Content, .ToolCalls, ...)."""
    calls = []
    for i, call in enumerate(m.get("tool_calls") or []):
        fn = call.get("function") or {}
        args = fn.get("arguments")
        function = {"Index": fn.get("index", i), "Name": fn.get("name", "")}
        function["Arguments"] = gotemplate.JSONMap(args if isinstance(args, dict) else {})
        calls.append(gotemplate.Struct({"ID": call.get("id", ""), "Function": gotemplate.Struct(function)}))
    return gotemplate.Struct(
        {
            "Role": str(m.get("role") or ""),
            "Content": str(m.get("content") or ""),
            "Thinking": str(m.get("thinking") or ""),
            "Images": list(m.get("images") or []),
            "ToolCalls": calls,
            "ToolName": str(m.get("tool_name") or m.get("name") or ""),
            "ToolCallID": str(m.get("tool_call_id") or ""),
        }
    )


def go_tools(tools: list[dict[str, Any]] | None) -> gotemplate.JSONList | None:
    """Tool definitions as Ollama's templates read them (.Function.Name, .Function.Parameters...);
    each prints as its JSON, as Ollama's do."""
    if not tools:
        return None
    out = gotemplate.JSONList()
    for tool in tools:
        fn = tool.get("function") or {}
        params = fn.get("parameters") or {}
        parameters = gotemplate.Struct(
            {
                "Type": params.get("type", ""),
                "Defs": params.get("$defs"),
                "Items": params.get("items"),
                "Required": list(params.get("required") or []),
                "Properties": _go_properties(params.get("properties")),
            },
            {"Type": "type", "Defs": "$defs,omitempty", "Items": "items,omitempty"}
            | {"Required": "required,omitempty", "Properties": "properties"},
            stringer=True,
        )
        function = gotemplate.Struct(
            {"Name": fn.get("name", ""), "Description": fn.get("description", ""), "Parameters": parameters},
            {"Name": "name", "Description": "description", "Parameters": "parameters"},
            stringer=True,  # (as Ollama's api.ToolFunction printed, what its qwen templates expect)
        )
        out.append(
            gotemplate.Struct(
                {"Type": tool.get("type", "function"), "Items": tool.get("items"), "Function": function},
                {"Type": "type", "Items": "items,omitempty", "Function": "function"},
                stringer=True,
            )
        )
    return out


def _go_properties(properties: Any) -> gotemplate.JSONMap:
    if not isinstance(properties, dict):
        return gotemplate.JSONMap()
    return gotemplate.JSONMap({str(k): _go_property(v) for k, v in properties.items()})


def _go_property(schema: Any) -> gotemplate.Struct:
    """A parameter's schema as Ollama's ToolProperty (.Type, .Description, .Enum, ...)."""
    schema = schema if isinstance(schema, dict) else {}
    kind = schema.get("type")
    fields = {
        "AnyOf": [_go_property(s) for s in schema.get("anyOf") or []],
        "Type": gotemplate.PropertyType([kind] if isinstance(kind, str) else list(kind or [])),
        "Items": schema.get("items"),
        "Description": schema.get("description", ""),
        "Enum": list(schema.get("enum") or []),
        "Properties": _go_properties(schema.get("properties")) if "properties" in schema else None,
        "Required": list(schema.get("required") or []),
    }
    tags = {name: name[0].lower() + name[1:] + ",omitempty" for name in fields}
    return gotemplate.Struct(fields, tags)


def prefill_of(messages: list[dict[str, Any]]) -> str:
    """The text a chat's reply goes on with: its final message's, when that is the assistant's (and no
    tool calls); else "" (a new assistant turn)."""
    last = messages[-1] if messages else {}
    if last.get("role") != "assistant" or last.get("tool_calls"):
        return ""
    return str(last.get("content") or "")


def continuing(rendered: str, prefill: str) -> str:
    """A chat rendered without a generation prompt, cut right after its final (assistant) message's
    text, so that the model goes on with that message instead of starting a new turn (a "prefill", as
    Anthropic's API and transformers' ``continue_final_message`` do); as is when the text is not in it."""
    for text in (prefill, prefill.strip()):
        if text and (at := rendered.rfind(text)) >= 0:
            return rendered[: at + len(text)]
    return rendered


def generate_messages(
    prompt: str, system: str | None, before: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """/api/generate's prompt (not raw) as chat messages: the system text, the model's MESSAGEs
    (``before``; none when a ``context`` continues an earlier answer), then the user's prompt."""
    head = [{"role": "system", "content": system}] if system else []
    return [*head, *(before or []), {"role": "user", "content": prompt}]


def with_system(messages: list[dict[str, Any]], system: str | None) -> list[dict[str, Any]]:
    """The model's own system message first, unless the conversation brings one."""
    if system and not any(m.get("role") == "system" for m in messages):
        return [{"role": "system", "content": system}, *messages]
    return messages
