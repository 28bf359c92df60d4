"""Generation options (Ollama's names and defaults), validated with clear errors."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ferrousforge.errors import BadRequest
from ferrousforge.protocol.fields import as_int

log = logging.getLogger("ferrousforge")

# Options Ollama clients may send that have no effect here; accepted so that clients keep working.
IGNORED_OPTIONS = frozenset(
    {
        "main_gpu",
        "low_vram",
        "use_mmap",
        "use_mlock",
        "numa",
        "penalize_newline",
        "tfs_z",
        "vocab_only",
        "f16_kv",
        "logits_all",
        "embedding_only",
    }
)
# Options that shape the loaded model rather than one request: a change reloads it.
LOAD_OPTIONS = (
    "num_ctx",
    "num_batch",
    "num_thread",
    "num_parallel",
    "num_gpu",
    "engine",
    "kv_cache_type",
    "flash_attention",
)
# engines a request may name; "onnx" is onnxruntime's short name
ENGINES = ("auto", "llama.cpp", "onnxruntime", "onnx", "wgpu")
# the KV cache's element type (Ollama's OLLAMA_KV_CACHE_TYPE): q8_0 about halves its memory, q4_0 quarters it
KV_CACHE_TYPES = ("f16", "q8_0", "q4_0")
FLASH_ATTENTION = ("auto", "on", "off")  # llama.cpp's flash attention; a quantized cache needs it


@dataclass(frozen=True)
class Range:
    low: float
    high: float


@dataclass(frozen=True)
class Options:
    temperature: float = field(default=0.8, metadata={"range": Range(0, 100)})
    top_k: int = field(default=40, metadata={"range": Range(0, 1_000_000)})
    top_p: float = field(default=0.9, metadata={"range": Range(0, 1)})
    min_p: float = field(default=0.0, metadata={"range": Range(0, 1)})
    typical_p: float = field(default=1.0, metadata={"range": Range(0, 1)})
    repeat_penalty: float = field(default=1.0, metadata={"range": Range(0, 100)})
    repeat_last_n: int = field(default=64, metadata={"range": Range(-1, 1_048_576)})
    presence_penalty: float = field(default=0.0, metadata={"range": Range(-2, 2)})
    frequency_penalty: float = field(default=0.0, metadata={"range": Range(-2, 2)})
    mirostat: int = field(default=0, metadata={"range": Range(0, 2)})
    mirostat_tau: float = field(default=5.0, metadata={"range": Range(0, 100)})
    mirostat_eta: float = field(default=0.1, metadata={"range": Range(0, 1)})
    seed: int = field(default=-1, metadata={"range": Range(-(2**63), 2**64 - 1)})
    stop: tuple[str, ...] = ()
    # tokens at the start of the window kept when a long prompt is truncated or the context shifts
    num_keep: int = field(default=4, metadata={"range": Range(0, 1_048_576)})
    num_predict: int = field(default=-1, metadata={"range": Range(-2, 1_048_576)})
    num_ctx: int = field(default=4096, metadata={"range": Range(16, 1_048_576)})
    num_batch: int = field(default=512, metadata={"range": Range(1, 65_536)})
    num_thread: int = field(default=0, metadata={"range": Range(0, 1024)})
    num_parallel: int = field(default=1, metadata={"range": Range(1, 64)})  # requests decoded together
    # layers offloaded to the GPU; -1: as many as fit in its free memory, 0: CPU only
    num_gpu: int = field(default=-1, metadata={"range": Range(-1, 1024)})
    engine: str = field(default="auto", metadata={"choices": ENGINES})  # a change reloads the model
    kv_cache_type: str = field(default="f16", metadata={"choices": KV_CACHE_TYPES})
    flash_attention: str = field(default="auto", metadata={"choices": FLASH_ATTENTION})

    @classmethod
    def parse(cls, raw: object, base: Options | None = None) -> Options:
        """Apply a request's ``options`` object over ``base`` (the model's defaults).

        Lenient as Ollama is: an unknown option or a value out of range is logged and ignored; a value
        of the wrong type is a BadRequest."""
        base = base or cls()
        if raw is None:
            return base
        if not isinstance(raw, dict):
            raise BadRequest("options must be an object")
        known = {f.name: f for f in fields(cls)}
        changes: dict[str, Any] = {}
        ignored: list[str] = []
        for key, value in raw.items():
            if key in IGNORED_OPTIONS or value is None:
                continue
            spec = known.get(key)
            if spec is None:
                ignored.append(f"unknown option '{str(key)[:64]}'")
                continue
            try:
                changes[key] = _coerce(key, value, spec.type, spec.metadata)
            except OutOfRange as exc:
                ignored.append(exc.message)
        if ignored:  # one line per request, however many
            more = f" (and {len(ignored) - 3} more)" if len(ignored) > 3 else ""
            log.warning("ignoring %s%s", "; ".join(ignored[:3]), more)
        return replace(base, **changes)

    @classmethod
    def check_names(cls, raw: dict[str, Any]) -> None:
        """A model's parameters (a Modelfile's PARAMETER, create's ``parameters``) name options, as
        ``ollama create`` insists; requests stay lenient."""
        known = {f.name for f in fields(cls)} | IGNORED_OPTIONS
        if unknown := next((str(key) for key in raw if key not in known), None):
            raise BadRequest(f"unknown parameter '{unknown[:64]}'")

    def load_key(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in LOAD_OPTIONS)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


class OutOfRange(BadRequest):
    """A well-typed option value outside its range: ignored, as Ollama ignores it."""


def _coerce(key: str, value: object, type_name: object, metadata: Any) -> object:
    if type_name in ("tuple[str, ...]",):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise BadRequest(f"option '{key}' must be a string or a list of strings")
        if len(items) > 16 or any(len(s) > 1000 for s in items):
            raise BadRequest(f"option '{key}' allows at most 16 strings of at most 1000 characters")
        return tuple(s for s in items if s)
    if type_name == "str":
        choices = metadata["choices"]
        if key == "engine" and isinstance(value, str):  # "" is auto, and names are read in any case
            value = value.strip().lower() or "auto"
        if value not in choices:
            raise BadRequest(f"option '{key}' must be one of {', '.join(choices)}")
        return "onnxruntime" if value == "onnx" else value
    if isinstance(value, bool):
        raise BadRequest(f"option '{key}' must be a number")
    if type_name == "int":
        value = as_int(value)
        if value is None:
            raise BadRequest(f"option '{key}' must be an integer")
    else:
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise BadRequest(f"option '{key}' must be a finite number")
        value = float(value)
    bound: Range | None = metadata.get("range")
    if bound is not None and not bound.low <= value <= bound.high:
        raise OutOfRange(f"option '{key}' must be between {bound.low:g} and {bound.high:g}")
    return value


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_FOREVER = (2**63 - 1) / 1e9  # Go's longest duration (~292 years): longer is kept forever
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: object, default: float | None = None) -> float | None:
    """Seconds a model stays loaded after a request; ``None`` means forever (negative values, and any
    longer than Go's longest duration, about 292 years).

    Accepts Ollama's forms: a number of seconds, or a Go duration string such as ``"5m"``,
    ``"1h30m"``, ``"0"`` or ``"-1"``.
    """
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise BadRequest("keep_alive must be a duration such as '5m' or a number of seconds")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise BadRequest("keep_alive must be finite")
        return None if value < 0 or value > _FOREVER else float(value)
    if not isinstance(value, str):
        raise BadRequest("keep_alive must be a duration such as '5m' or a number of seconds")
    text = value.strip()
    negative = text.startswith("-")
    body = text.lstrip("+-")
    try:
        seconds = float(body)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(body):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(body) or not body:
            raise BadRequest(f"invalid keep_alive duration '{value}'") from None
    if (negative and seconds > 0) or seconds > _FOREVER:
        return None
    return seconds
