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


_GO_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_GO_VARS = {".System": "System", ".Prompt": "Prompt", ".Response": "Response"}


def is_go_template(template: str) -> bool:
    """Go's actions (``{{ .Prompt }}``, ``{{ if .System }}``, ``{{ end }}``, ``{{ range ... }}``), never
    written so in Jinja."""
    return bool(re.search(r"\{\{-?\s*((\w+\s+)?\.[A-Z]|(if|else|end)\b|(range|with)\s+[.$])", template))


def go_to_jinja(template: str) -> str:
    """Translate the Go-template subset Ollama's simple templates use into Jinja2."""

    def action(match: re.Match[str]) -> str:
        left, body, right = match.group(1), match.group(2), match.group(3)
        words = body.split()
        if body in _GO_VARS:
            return "{{" + left + " " + _GO_VARS[body] + " " + right + "}}"
        if len(words) == 2 and words[0] == "if" and words[1] in _GO_VARS:
            return "{%" + left + " if " + _GO_VARS[words[1]] + " " + right + "%}"
        if body in ("else", "end"):
            return "{%" + left + (" else " if body == "else" else " endif ") + right + "%}"
        raise BadRequest(
            f"unsupported template action '{{{{ {body} }}}}': use a Jinja2 chat template, "
            "or only .System, .Prompt, .Response with if/else/end"
        )

    return _GO_ACTION.sub(action, template)


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

    go = is_go_template(template)  # Go keeps whitespace as written; chat templates expect Jinja's trims
    env = Sandbox(
        trim_blocks=not go,
        lstrip_blocks=not go,
        keep_trailing_newline=go,
        extensions=["jinja2.ext.loopcontrols"],
    )
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["range"] = _Steps
    try:
        return env.from_string(go_to_jinja(template) if go else template)
    except TemplateError as exc:
        raise BadRequest(f"invalid template: {exc}") from exc
    except RecursionError:
        raise BadRequest("invalid template: nested too deeply") from None


def check_template(template: str) -> None:
    """A 400 for a template that cannot render (Jinja that doesn't parse, Go beyond the subset)."""
    _compile(template)


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
        go = is_go_template(template)  # Ollama's .System/.Prompt/.Response: a turn at a time
        text: str = _render_turns(compiled, messages, variables) if go else compiled.render(**variables)
    except TemplateError as exc:
        raise BadRequest(f"template failed to render: {exc}") from exc
    except RecursionError:
        raise BadRequest("template failed to render: nested too deeply") from None
    finally:
        _Deadline.local.until = float("inf")
    if strip_bos and bos_token and text.startswith(bos_token):
        text = text[len(bos_token) :]
    return continuing(text, prefill) if prefill and not go else text  # (a Go template's ends in it)


_RESPONSE = "\ue000response\ue000"  # where the last turn's .Response goes (private-use characters)


def _collate(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Roles and texts, a run of messages of one role joined (as Ollama's templates see a chat)."""
    out: list[tuple[str, str]] = []
    for m in messages:
        role, text = str(m.get("role")), str(m.get("content") or "")
        if out and out[-1][0] == role:
            out[-1] = (role, out[-1][1] + "\n\n" + text)
        else:
            out.append((role, text))
    return out


def _render_turns(compiled: Any, messages: list[dict[str, Any]], variables: dict[str, Any]) -> str:
    """A .System/.Prompt/.Response template as Ollama executes one: once for each exchange (a system
    text, a prompt, a response), then for the last, cut right after its .Response (the reply goes
    there; a final assistant message is its start)."""
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}
    for role, text in _collate(messages):
        key = {"system": "System", "user": "Prompt", "assistant": "Response"}.get(role)
        if key is None:  # (tool results have no place in these templates)
            continue
        if (key == "System" and (turn["Prompt"] or turn["Response"])) or (
            key == "Prompt" and turn["Response"]
        ):
            out.append(compiled.render(**variables, **turn))
            turn = {"System": "", "Prompt": "", "Response": ""}
        turn[key] = text
    last = compiled.render(**variables, **{**turn, "Response": _RESPONSE})
    at = last.find(_RESPONSE)
    out.append(last if at < 0 else last[:at] + turn["Response"])
    return "".join(out)


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
