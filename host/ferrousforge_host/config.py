"""Settings: defaults < TOML config file < ``FERROUSFORGE_*`` environment < command-line flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ferrousforge.errors import BadRequest

HOME = Path(os.path.expanduser("~")) / ".ferrousforge"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1:11434"
    models: Path = HOME / "models"
    keep_alive: str = "5m"
    num_thread: int = 0
    num_ctx: int = 4096
    max_body: int = 16 * 1024 * 1024  # JSON request bodies; blob uploads stream past it
    num_parallel: int = 4  # requests to one generation model decoded together
    max_memory: int = 0  # bytes the loaded models may take; 0: three quarters of the machine's RAM
    max_loaded_models: int = 3
    max_queue: int = 512  # requests admitted at once; past it, 503 with Retry-After
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


def _coerce(name: str, value: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    try:
        if kind == "int":
            return int(value)
        if kind == "Path":
            return Path(os.path.expanduser(str(value)))
        return str(value)
    except (TypeError, ValueError):
        raise BadRequest(f"invalid setting {name}={value!r}") from None


def config_path() -> Path:
    return Path(os.environ.get("FERROUSFORGE_CONFIG", HOME / "config.toml"))


def load_settings(**flags: Any) -> Settings:
    names = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    path = config_path()
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"cannot read config file {path}: {exc}") from None
        unknown = set(data) - names
        if unknown:
            raise BadRequest(f"unknown setting(s) in {path}: {', '.join(sorted(unknown))}")
        values.update(data)
    for name in names:
        env = os.environ.get(f"FERROUSFORGE_{name.upper()}")
        if env is not None and env != "":
            values[name] = env
    values.update({k: v for k, v in flags.items() if v is not None})
    return replace(Settings(), **{k: _coerce(k, v) for k, v in values.items()})
