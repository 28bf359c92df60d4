"""Manifests in Ollama's layout: a config blob plus typed layers, each addressed by sha256."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from ferrousforge.errors import BadRequest

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.ollama.image.config.v1+json"
MODEL = "application/vnd.ollama.image.model"
TEMPLATE = "application/vnd.ollama.image.template"
SYSTEM = "application/vnd.ollama.image.system"
PARAMS = "application/vnd.ollama.image.params"
LICENSE = "application/vnd.ollama.image.license"
MESSAGES = "application/vnd.ollama.image.messages"  # a conversation the model starts from (JSON)
PROJECTOR = "application/vnd.ollama.image.projector"  # a vision model's image encoder (GGUF)
ADAPTER = "application/vnd.ollama.image.adapter"  # a LoRA adapter (GGUF)
DOCKER_CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"  # older Ollama configs
ONNX_MODEL = "application/vnd.ferrousforge.onnx"
TOKENIZER = "application/vnd.ferrousforge.tokenizer"
CT2_MODEL = "application/vnd.ferrousforge.ctranslate2"  # a CTranslate2 model.bin (Whisper)
FILE = "application/vnd.ferrousforge.file"  # any other named file of a multi-file model

DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


def normalize_digest(digest: object) -> str:
    """``sha256:<hex>`` (or ``sha256-<hex>``) → ``sha256:<hex>``; anything else is a bad request."""
    if not isinstance(digest, str) or not (m := DIGEST.match(digest)):
        raise BadRequest(f"invalid digest '{digest}': expected sha256:<64 hex digits>")
    return f"sha256:{m.group(1)}"


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int
    name: str | None = None  # file name inside the model, for multi-file models

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.name:
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class Manifest:
    config: Layer
    layers: tuple[Layer, ...] = field(default=())

    def layer(self, media_type: str) -> Layer | None:
        return next((x for x in self.layers if x.media_type == media_type), None)

    @property
    def model_layer(self) -> Layer | None:
        return self.layer(MODEL) or self.layer(ONNX_MODEL) or self.layer(CT2_MODEL)

    @property
    def size(self) -> int:
        return self.config.size + sum(x.size for x in self.layers)

    def digests(self) -> set[str]:
        return {self.config.digest, *(x.digest for x in self.layers)}

    def to_bytes(self) -> bytes:
        body = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": self.config.to_json(),
            "layers": [x.to_json() for x in self.layers],
        }
        return json.dumps(body, indent=2).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        try:
            body = json.loads(data)
            return cls(
                config=_layer(body["config"]),
                layers=tuple(_layer(x) for x in body.get("layers", [])),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"corrupt manifest: {exc}") from exc


def _layer(raw: dict[str, Any]) -> Layer:
    size = raw["size"]
    if not isinstance(size, int) or size < 0 or not isinstance(raw["mediaType"], str):
        raise ValueError("bad layer")
    return Layer(raw["mediaType"], normalize_digest(raw["digest"]), size, raw.get("name"))
