"""Prompt templates: a model's own Jinja2 chat template, a family format, or Ollama's Go-style subset.

Every template is rendered as a Jinja2 chat template over ``messages`` (the convention of Hugging Face
and GGUF ``tokenizer.chat_template``). Ollama-style templates (``{{ .System }}``, ``{{ .Prompt }}``,
``{{ if .System }}…{{ end }}``) are translated to Jinja2 first.
"""

from __future__ import annotations

import re
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
    return bool(re.search(r"\{\{-?\s*(\w+\s+)?\.[A-Z]", template))


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


@lru_cache(maxsize=64)
def _compile(template: str) -> Any:
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise BadRequest(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(go_to_jinja(template) if is_go_template(template) else template)
    except TemplateError as exc:
        raise BadRequest(f"invalid template: {exc}") from exc


def render(
    template: str,
    messages: list[dict[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """Render a chat template; a leading BOS is dropped because the tokenizer adds its own."""
    from jinja2 import TemplateError

    system = "\n".join(m["content"] for m in messages if m.get("role") == "system")
    prompt = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    try:
        text: str = _compile(template).render(
            messages=messages,
            bos_token=bos_token,
            eos_token=eos_token,
            add_generation_prompt=add_generation_prompt,
            tools=tools,
            System=system,
            Prompt=prompt,
            Response="",
        )
    except TemplateError as exc:
        raise BadRequest(f"template failed to render: {exc}") from exc
    if bos_token and text.startswith(bos_token):
        text = text[len(bos_token) :]
    return text


def generate_messages(prompt: str, system: str | None) -> list[dict[str, Any]]:
    """/api/generate's prompt (not raw) as chat messages: the system text, then the user's prompt."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def with_system(messages: list[dict[str, Any]], system: str | None) -> list[dict[str, Any]]:
    """The model's own system message first, unless the conversation brings one."""
    if system and not any(m.get("role") == "system" for m in messages):
        return [{"role": "system", "content": system}, *messages]
    return messages
