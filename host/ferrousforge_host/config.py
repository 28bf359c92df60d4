"""Settings: defaults < TOML config file < Ollama's ``OLLAMA_*`` variables < ``FERROUSFORGE_*``
environment < command-line flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ferrousforge.errors import BadRequest
from ferrousforge.options import FLASH_ATTENTION, KV_CACHE_TYPES, parse_keep_alive

HOME = Path(os.path.expanduser("~")) / ".ferrousforge"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1:11434"
    models: Path = HOME / "models"
    keep_alive: str = "5m"
    num_thread: int = 0
    num_ctx: int = 4096
    max_body: int = 16 * 1024 * 1024  # JSON request bodies; blob uploads stream past it
    max_audio_bytes: int = 25 * 1024 * 1024  # an uploaded audio file (OpenAI's limit too)
    max_audio_seconds: int = 3600  # audio to transcribe, once decoded
    max_speech_chars: int = 4096  # text to speak in one request (OpenAI's limit too)
    num_parallel: int = 4  # requests to one generation model decoded together
    kv_cache_type: str = "f16"  # llama.cpp's KV cache: f16, q8_0 (about half the memory), q4_0
    flash_attention: str = "auto"  # llama.cpp's flash attention: auto, on, off
    debug: int = 0  # 1: debug lines in the server's log (OLLAMA_DEBUG)
    load_timeout: str = "5m"  # a model load that takes longer is ended (its runner killed); 0: no limit
    max_memory: int = 0  # bytes the loaded models may take; 0: three quarters of the machine's RAM
    max_loaded_models: int = 3
    max_queue: int = 512  # requests that may wait besides the num_parallel decoding; past it, 503
    origins: str = ""  # browser origins allowed besides localhost, comma-separated, * wildcards
    api_keys: str = ""  # when set, requests need Authorization: Bearer <one of these>
    import_dirs: str = (
        ""  # folders local pull sources may come from (os.pathsep-separated); "": home and temp
    )

    @property
    def import_folders(self) -> list[Path] | None:
        return [Path(os.path.expanduser(d)) for d in self.import_dirs.split(os.pathsep) if d] or None

    web_dir: str = ""  # the demo site served at /ui/ ("": the checkout's web/)
    runtime_dir: str = (
        ""  # the browser runtime bundle at /ui/runtime/ ("": build/runtime, from wasm/build.py)
    )
    batching: int = 1  # coalesce concurrent embed/rerank requests into one engine call (0: off)
    runners: int = 1  # 1: each loaded native model in a runner process of its own; 0: in the server
    engine: str = ""  # preferred engine: "wgpu", or per format "onnx=wgpu,gguf=llama.cpp" ("": auto)
    registry: str = "https://registry.ollama.ai"  # where short names pull from ("": no registry pulls)
    insecure_registry: int = 0  # 1: plain http to every registry (always for 127.0.0.1 and localhost)
    ollama_models: str = "auto"  # an Ollama store, read in place ("auto": $OLLAMA_MODELS or ~/.ollama/models)

    @property
    def ollama_store(self) -> Path | None:
        """The Ollama store to list beside ours, read-only; None when off or not there."""
        folder = self.ollama_models
        if folder == "auto":
            folder = os.environ.get("OLLAMA_MODELS") or str(Path.home() / ".ollama" / "models")
        path = Path(os.path.expanduser(folder)) if folder else None
        return path if path and (path / "manifests").is_dir() else None

    @property
    def bind(self) -> tuple[str, int]:
        host, _, port = self.host.rpartition(":") if ":" in self.host else (self.host, "", "11434")
        host = host.strip("[]") or "127.0.0.1"
        try:
            return host, int(port)
        except ValueError:
            raise BadRequest(f"invalid host '{self.host}': expected HOST:PORT") from None

    @property
    def base_url(self) -> str:
        host, port = self.bind
        host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{host}:{port}"


_EMPTY_MEANS_OFF = {"registry", "ollama_models"}  # set to "" in the environment, these turn off


# Ollama's server variables, read as FerrousForge's own (below FERROUSFORGE_*): a machine set up for
# Ollama serves the same way. OLLAMA_MODELS is not here: that store is listed beside ours, read-only.
OLLAMA_VARIABLES = {
    "OLLAMA_HOST": "host",
    "OLLAMA_KEEP_ALIVE": "keep_alive",
    "OLLAMA_CONTEXT_LENGTH": "num_ctx",
    "OLLAMA_NUM_PARALLEL": "num_parallel",
    "OLLAMA_MAX_LOADED_MODELS": "max_loaded_models",
    "OLLAMA_MAX_QUEUE": "max_queue",
    "OLLAMA_ORIGINS": "origins",
    "OLLAMA_KV_CACHE_TYPE": "kv_cache_type",
    "OLLAMA_FLASH_ATTENTION": "flash_attention",
    "OLLAMA_DEBUG": "debug",
    "OLLAMA_LOAD_TIMEOUT": "load_timeout",
}
# counts where 0 means the default, as Ollama reads 0 for its own as "auto"
_ZERO_IS_DEFAULT = {
    "num_ctx",
    "num_parallel",
    "max_loaded_models",
    "max_queue",
    "max_body",
    "max_audio_bytes",
    "max_audio_seconds",
    "max_speech_chars",
}
_DURATIONS = {"keep_alive", "load_timeout"}
_CHOICES = {"kv_cache_type": KV_CACHE_TYPES, "flash_attention": FLASH_ATTENTION}
_SWITCH = {"1": "on", "t": "on", "true": "on", "0": "off", "f": "off", "false": "off"}  # as Go's ParseBool


def ollama_host(value: str) -> str:
    """OLLAMA_HOST as Ollama reads it: an optional scheme, a host, an optional port (11434)."""
    address = value.strip().split("://", 1)[-1].split("/", 1)[0]
    host, colon, port = (
        address.rpartition(":") if address.count(":") == 1 or "]:" in address else ("", "", "")
    )
    if not colon:
        host, port = address, "11434"
    return f"{host or '127.0.0.1'}:{port or '11434'}"


def _coerce(name: str, value: Any, source: str = "") -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if kind == "int":
            text = str(value).strip().lower()
            if name == "debug" and text in _SWITCH:  # OLLAMA_DEBUG=true as well as a level
                return 1 if _SWITCH[text] == "on" else 0
            number = int(value)
            if number < 0:
                raise BadRequest(f"invalid setting {source or name}={value!r}: it cannot be negative")
            if number == 0 and name in _ZERO_IS_DEFAULT:
                return getattr(Settings, name)
            return number
        if kind == "Path":
            return Path(os.path.expanduser(str(value)))
    except (TypeError, ValueError):
        raise BadRequest(f"invalid setting {source or name}={value!r}: not a whole number") from None
    text = str(value)
    if name == "engine":
        from ferrousforge_host.scheduler import parse_engines

        try:
            parse_engines(text)
        except BadRequest as exc:
            raise BadRequest(
                f"invalid setting {source or name}={value!r}: {exc.message} "
                "(an engine, or per format: onnx=wgpu,gguf=llama.cpp)"
            ) from None
    if name in _DURATIONS:
        try:
            parse_keep_alive(text)
        except BadRequest:
            raise BadRequest(
                f"invalid setting {source or name}={value!r}: not a duration (30s, 5m, 1h, or seconds)"
            ) from None
    if choices := _CHOICES.get(name):
        text = _SWITCH.get(text.strip().lower(), text.strip().lower()) if name == "flash_attention" else text
        if text not in choices:
            also = " (or 1, 0, true, false)" if name == "flash_attention" else ""
            raise BadRequest(f"invalid setting {source or name}={value!r}: one of {', '.join(choices)}{also}")
    return text


def config_path() -> Path | None:
    """The config file: the one FERROUSFORGE_CONFIG names (none when it is empty), else the usual one."""
    named = os.environ.get("FERROUSFORGE_CONFIG")
    if named == "":
        return None
    return Path(os.path.expanduser(named)) if named else HOME / "config.toml"


def load_settings(**flags: Any) -> Settings:
    names = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}  # the environment variable a value came from
    path = config_path()
    if path and os.environ.get("FERROUSFORGE_CONFIG") and not path.is_file():  # named: not skipped quietly
        raise BadRequest(f"no config file at {path} (FERROUSFORGE_CONFIG; empty for none)")
    if path and path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"cannot read config file {path}: {exc}") from None
        unknown = set(data) - names
        if unknown:
            raise BadRequest(f"unknown setting(s) in {path}: {', '.join(sorted(unknown))}")
        values.update(data)
    for variable, name in OLLAMA_VARIABLES.items():
        if given := os.environ.get(variable, "").strip():
            values[name] = given
            sources[name] = variable
    for name in names:
        env = os.environ.get(f"FERROUSFORGE_{name.upper()}")
        if env is not None and (env != "" or name in _EMPTY_MEANS_OFF):
            values[name] = env
            sources[name] = f"FERROUSFORGE_{name.upper()}"
    for name, value in flags.items():
        if value is not None:
            values[name] = value
            sources.pop(name, None)
    if "host" in values:  # in any of Ollama's forms, wherever it came from: http://host:port, host
        values["host"] = ollama_host(str(values["host"]))
    return replace(Settings(), **{k: _coerce(k, v, sources.get(k, "")) for k, v in values.items()})
