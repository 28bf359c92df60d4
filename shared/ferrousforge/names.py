"""Model names in Ollama's form: ``[host/][namespace/]model[:tag]``, e.g. ``gemma3:270m``.

The host is a registry (``myhost:5000``, ``hf.co``); Ollama's own registry is the default, so
``registry.ollama.ai/library/qwen3:0.6b`` and ``qwen3:0.6b`` are one name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ferrousforge.errors import BadRequest

DEFAULT_HOST = "local"
OLLAMA_REGISTRY = "registry.ollama.ai"  # Ollama's default registry: a name there is the short name
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 256

_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,79}(:[0-9]{1,5})?$")  # a registry, with its port
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

# A regular expression that only valid names match (for API documents; a little stricter than parse).
_DOTTED = r"(?:\.[A-Za-z0-9_-]{1,10}){0,2}"
_PIECE = r"[A-Za-z0-9][A-Za-z0-9_-]{0,19}" + _DOTTED
_HOST_PIECE = r"[A-Za-z0-9][A-Za-z0-9-]{0,19}(?:\.[A-Za-z0-9-]{1,10}){0,3}(?::[0-9]{1,5})?"
NAME_PATTERN = rf"^(?:(?:{_HOST_PIECE}/)?{_PIECE}/)?{_PIECE}(?::[A-Za-z0-9_][A-Za-z0-9_-]{{0,39}}{_DOTTED})?$"


@dataclass(frozen=True, order=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: object) -> ModelName:
        """Parse and validate a name; raises BadRequest with the reason."""
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("model name is required")
        text = text.strip()
        if len(text) > MAX_NAME_LENGTH:
            raise BadRequest(f"model name is longer than {MAX_NAME_LENGTH} characters")
        if "\\" in text or text.startswith("/") or ".." in text or "\x00" in text:
            raise BadRequest(f"invalid model name '{text}'")
        path, _, tag = text.rpartition(":") if ":" in text.split("/")[-1] else (text, "", DEFAULT_TAG)
        parts = path.split("/")
        if len(parts) == 1:
            host, namespace, model = DEFAULT_HOST, DEFAULT_NAMESPACE, parts[0]
        elif len(parts) == 2:
            host, namespace, model = DEFAULT_HOST, parts[0], parts[1]
        elif len(parts) == 3:
            host, namespace, model = parts
        else:
            raise BadRequest(f"invalid model name '{text}': too many '/' separated parts")
        if not _HOST.match(host) or not _PART.match(namespace) or not _PART.match(model):
            raise BadRequest(f"invalid model name '{text}'")
        if not _TAG.match(tag):
            raise BadRequest(f"invalid model tag '{tag}'")
        host = host.lower()
        return cls(DEFAULT_HOST if host == OLLAMA_REGISTRY else host, namespace, model, tag)

    @property
    def display(self) -> str:
        """The short form users type: ``gemma3:270m``, ``user/model:tag``, ``hf.co/u/r:q``."""
        if self.host == DEFAULT_HOST:
            base = self.model if self.namespace == DEFAULT_NAMESPACE else f"{self.namespace}/{self.model}"
        else:
            base = f"{self.host}/{self.namespace}/{self.model}"
        return f"{base}:{self.tag}"

    @property
    def parts(self) -> tuple[str, str, str, str]:
        return (self.host, self.namespace, self.model, self.tag)

    def __str__(self) -> str:
        return self.display
