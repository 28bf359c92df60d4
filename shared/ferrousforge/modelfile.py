"""Ollama's Modelfile: FROM, ADAPTER, PARAMETER, TEMPLATE, SYSTEM, MESSAGE, LICENSE (other commands
are refused). A second FROM names a vision model's projector file (its mmproj GGUF); each ADAPTER a
LoRA adapter (a GGUF) applied over the model."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ferrousforge.errors import BadRequest

_COMMAND = re.compile(r"^\s*([A-Za-z]+)\s+(.*)$", re.S)


@dataclass
class Modelfile:
    source: str = ""
    projector: str = ""  # a second FROM: the projector file of a vision model
    adapters: list[str] = field(default_factory=list)  # ADAPTER lines: LoRA adapter files
    parameters: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    license: str | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> Modelfile:
        out = cls()
        lines = text.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _COMMAND.match(line)
            if not match:
                raise BadRequest(f"Modelfile line {i}: expected 'COMMAND value'")
            command, value = match.group(1).upper(), match.group(2).strip()
            role = ""
            if command == "MESSAGE":  # MESSAGE <role> <text>: the text may be quoted as any value
                role, _, value = value.partition(" ")
                value = value.strip()
            if value.startswith('"""'):
                body = value[3:]
                while '"""' not in body and i < len(lines):
                    body += "\n" + lines[i]
                    i += 1
                if '"""' not in body:
                    raise BadRequest('Modelfile: unterminated """ block')
                value = body[: body.index('"""')]
            else:
                value = unquote(value)
            if command == "FROM":
                if out.projector:
                    raise BadRequest(f"Modelfile line {i}: two FROM lines at most (a model, its projector)")
                if out.source:
                    out.projector = value
                else:
                    out.source = value
            elif command == "ADAPTER":
                out.adapters.append(value)
            elif command == "PARAMETER":
                key, _, raw = value.partition(" ")
                out.add_parameter(key.strip(), raw.strip())
            elif command == "TEMPLATE":
                out.template = value
            elif command == "SYSTEM":
                out.system = value
            elif command == "LICENSE":  # each one kept, as Ollama keeps several
                out.license = f"{out.license}\n\n{value}" if out.license else value
            elif command == "MESSAGE":
                if role not in MESSAGE_ROLES:
                    raise BadRequest(
                        f"Modelfile line {i}: MESSAGE role must be one of {', '.join(MESSAGE_ROLES)}"
                    )
                out.messages.append({"role": role, "content": value})
            else:
                raise BadRequest(f"Modelfile command {command} is not supported")
        if not out.source:
            raise BadRequest("Modelfile needs a FROM line")
        return out

    def add_parameter(self, key: str, raw: str) -> None:
        if not key or not raw:
            raise BadRequest("PARAMETER needs a name and a value")
        raw = unquote(raw)
        if key == "stop":
            self.parameters.setdefault("stop", []).append(raw)
            return
        try:
            self.parameters[key] = json.loads(raw)
        except (ValueError, RecursionError):
            self.parameters[key] = raw


MESSAGE_ROLES = ("system", "user", "assistant")


def unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def check_messages(messages: object) -> list[dict[str, Any]]:
    """A model's MESSAGEs (Modelfile or /api/create ``messages``): roles and text only."""
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be a list of {role, content}")
    out = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        content = m.get("content") if isinstance(m, dict) else None
        if role not in MESSAGE_ROLES:
            raise BadRequest(f"messages[{i}]: role must be one of {', '.join(MESSAGE_ROLES)}")
        if not isinstance(content, str):
            raise BadRequest(f"messages[{i}]: content must be a string")
        out.append({"role": role, "content": content})
    return out


def render_parameters(params: dict[str, Any]) -> str:
    """Parameters as /api/show prints them: one ``name value`` per line."""
    lines = []
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{key:<30} {json.dumps(item) if isinstance(item, str) else item}")
    return "\n".join(lines)
