"""FerrousForge's Python SDK: a client for the host's API, on the standard library only.

``Client`` covers generation, chat, embeddings, rerank and model management; streaming calls yield
each NDJSON object. ``AsyncClient`` offers the same calls as coroutines. Short model names from
``ferrousforge.catalogue.ALIASES`` (e.g. ``"bge-small-en"``) are pulled by the host from their Hugging
Face repository and then used under the short name.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, BinaryIO

from ferrousforge.errors import ForgeError
from ferrousforge.protocol.embed import rerank_body

DEFAULT_HOST = "http://127.0.0.1:11434"


class ResponseError(ForgeError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ConnectionFailed(ForgeError):
    pass


def _host_url(host: str | None) -> str:
    host = host or os.environ.get("FERROUSFORGE_HOST") or DEFAULT_HOST
    if "://" not in host:
        host = "http://" + host
    return host.rstrip("/")


class Client:
    """``api_key`` (default ``FERROUSFORGE_API_KEY``) is sent as ``Authorization: Bearer`` to a host
    started with ``FERROUSFORGE_API_KEYS``."""

    def __init__(
        self, host: str | None = None, timeout: float | None = None, api_key: str | None = None
    ) -> None:
        self.host = _host_url(host)
        self.timeout = timeout
        self.api_key = api_key if api_key is not None else os.environ.get("FERROUSFORGE_API_KEY", "")

    def auth_headers(self) -> dict[str, str]:
        """What every request to the host carries: its API key, where there is one."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _open(
        self,
        method: str,
        path: str,
        body: Any = None,
        data: BinaryIO | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        payload = json.dumps(body).encode() if body is not None else data
        request = urllib.request.Request(self.host + path, data=payload, method=method, headers=headers or {})
        if body is not None:
            request.add_header("Content-Type", "application/json")
        for key, value in self.auth_headers().items():
            request.add_header(key, value)
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                message = json.loads(text).get("error", text)
            except (ValueError, AttributeError):
                message = text or exc.reason
            if exc.code == 401:  # the key is this side's to give
                message = f"{message}; the CLI and this client send FERROUSFORGE_API_KEY"
            raise ResponseError(str(message), exc.code) from None
        except (urllib.error.URLError, ConnectionError) as exc:
            raise ConnectionFailed(
                f"could not connect to FerrousForge at {self.host} ({exc}); is 'ferrousforge serve' running?"
            ) from None

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        with self._open(method, path, body) as response:
            raw = response.read()
        return json.loads(raw) if raw else {}

    def _stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        with self._open("POST", path, {**body, "stream": True}) as response:
            for line in response:
                if not line.strip():
                    continue
                chunk = json.loads(line)
                if "error" in chunk:
                    raise ResponseError(chunk["error"], 500)
                yield chunk

    # -- generation -----------------------------------------------------------------------
    def generate(self, model: str, prompt: str = "", stream: bool = False, **fields: Any) -> Any:
        body = {"model": model, "prompt": prompt, **fields}
        return (
            self._stream("/api/generate", body)
            if stream
            else self._json("POST", "/api/generate", {**body, "stream": False})
        )

    def chat(self, model: str, messages: list[dict[str, Any]], stream: bool = False, **fields: Any) -> Any:
        body = {"model": model, "messages": messages, **fields}
        return (
            self._stream("/api/chat", body)
            if stream
            else self._json("POST", "/api/chat", {**body, "stream": False})
        )

    # -- embeddings and rerank ------------------------------------------------------------
    def embed(self, model: str, input: str | list[str], **fields: Any) -> dict[str, Any]:
        """Ollama's /api/embed answer: ``embeddings``, ``prompt_eval_count`` and durations."""
        body = {"model": model, "input": input, **fields}
        return self._json("POST", "/api/embed", body)

    def embeddings(self, texts: list[str], model: str, dimensions: int | None = None) -> list[list[float]]:
        extra = {"dimensions": dimensions} if dimensions else {}
        return self.embed(model, texts, **extra)["embeddings"]

    def rerank(
        self,
        query: str,
        documents: list[str],
        model: str,
        top_n: int | None = None,
        return_documents: bool = True,
    ) -> list[dict[str, Any]]:
        """Results sorted by relevance: ``{index, relevance_score, document?}``."""
        body = rerank_body(query, documents, model, top_n, return_documents)
        return self._json("POST", "/api/rerank", body)["results"]

    # -- models ---------------------------------------------------------------------------
    def pull(self, model: str, source: str | None = None, insecure: bool = False) -> Iterator[dict[str, Any]]:
        body: dict[str, Any] = {"model": model}
        if source:
            body["source"] = source
        if insecure:
            body["insecure"] = True
        return self._stream("/api/pull", body)

    def push(self, model: str, insecure: bool = False) -> Iterator[dict[str, Any]]:
        return self._stream("/api/push", {"model": model, **({"insecure": True} if insecure else {})})

    def create(self, model: str, **fields: Any) -> Iterator[dict[str, Any]]:
        return self._stream("/api/create", {"model": model, **fields})

    def list(self) -> dict[str, Any]:
        return self._json("GET", "/api/tags")

    def show(self, model: str) -> dict[str, Any]:
        return self._json("POST", "/api/show", {"model": model})

    def ps(self) -> dict[str, Any]:
        return self._json("GET", "/api/ps")

    def info(self) -> dict[str, Any]:
        return self._json("GET", "/api/info")

    def delete(self, model: str) -> None:
        self._json("DELETE", "/api/delete", {"model": model})

    def copy(self, source: str, destination: str) -> None:
        self._json("POST", "/api/copy", {"source": source, "destination": destination})

    def version(self) -> str:
        return str(self._json("GET", "/api/version")["version"])

    def has_blob(self, digest: str) -> bool:
        try:
            self._open("HEAD", f"/api/blobs/{digest}").close()
            return True
        except ResponseError as exc:
            if exc.status == 404:
                return False
            raise

    def upload_blob(self, digest: str, file: BinaryIO, size: int) -> None:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        self._open("POST", f"/api/blobs/{digest}", data=file, headers=headers).close()


class AsyncClient:
    """``Client``'s calls as coroutines (natively each runs on a thread; streams are async iterators)."""

    def __init__(
        self, host: str | None = None, timeout: float | None = None, api_key: str | None = None
    ) -> None:
        self.sync = Client(host, timeout, api_key)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.sync, name)
        if not callable(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            import asyncio

            result = await asyncio.to_thread(method, *args, **kwargs)
            if isinstance(result, Iterator):
                return _aiter(result)
            return result

        return call


async def _aiter(items: Iterator[dict[str, Any]]) -> Any:
    import asyncio

    done = object()
    while (item := await asyncio.to_thread(next, items, done)) is not done:
        yield item
