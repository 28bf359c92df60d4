"""Model files in the browser: fetched from the host's content-addressed blob URLs, kept in the Cache
API, verified by sha256 before use. A corrupt cached copy is evicted and fetched again; a storage
error (quota) means no cache, never a broken page. Bytes stay in JS (a ``Uint8Array``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import js

from ferrousforge.browser.bridge import absent, helpers, jsobj
from ferrousforge.errors import ForgeError

CACHE = "ferrousforge-blobs-v1"


class BlobCache:
    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.headers = headers
        self.downloads = 0  # fetched from the network this session
        self.hits = 0
        self.disabled = ""  # why the cache is off, if it is

    async def _cache(self) -> Any:
        if self.disabled:
            return None
        try:
            return await js.caches.open(CACHE)
        except Exception as exc:  # no Cache API (insecure context) or storage refused
            self.disabled = str(exc)
            return None

    async def get(
        self, url: str, digest: str, size: int, progress: Callable[[int, int], None] | None = None
    ) -> Any:
        """The file's bytes (a JS Uint8Array), from the cache if a verified copy is there."""
        full = self.base + url
        early = await helpers().takePrefetched(digest)  # fetched and verified while Pyodide booted
        if not absent(early):
            self.hits += 1
            return early
        cache = await self._cache()
        if cache is not None:
            cached = await cache.match(full)
            if not absent(cached):
                data = js.Uint8Array.new(await cached.arrayBuffer())
                if await verify(data, digest):
                    self.hits += 1
                    if progress:
                        progress(size, size)
                    return data
                await cache.delete(full)  # corrupt or stale: evict, fetch again
        data = await self._download(full, size, progress)
        if not await verify(data, digest):
            raise ForgeError(f"downloaded file does not match its digest {digest}")
        if cache is not None:
            try:
                response = js.Response.new(
                    data, jsobj({"headers": {"Content-Type": "application/octet-stream"}})
                )
                await cache.put(full, response)
            except Exception as exc:  # QuotaExceededError: run without caching
                self.disabled = f"cache write failed: {exc}"
        return data

    async def _download(self, url: str, size: int, progress: Callable[[int, int], None] | None) -> Any:
        response = await js.fetch(url, jsobj({"headers": self.headers}))
        if not response.ok:
            raise ForgeError(f"fetching {url} failed: HTTP {response.status}")
        self.downloads += 1
        if progress is None:
            return js.Uint8Array.new(await response.arrayBuffer())
        data = await helpers().readWithProgress(response, size, progress)
        return data

    async def usage(self) -> dict[str, Any]:
        cache = await self._cache()
        entries = len(await cache.keys()) if cache is not None else 0
        estimate: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            estimate = (await js.navigator.storage.estimate()).to_py()
        return {
            "entries": entries,
            "usage": int(estimate.get("usage", 0) or 0),
            "quota": int(estimate.get("quota", 0) or 0),
            "downloads": self.downloads,
            "hits": self.hits,
            **({"disabled": self.disabled} if self.disabled else {}),
        }

    async def clear(self) -> None:
        with contextlib.suppress(Exception):
            await js.caches.delete(CACHE)


async def verify(data: Any, digest: str) -> bool:
    expected = digest.split(":", 1)[-1]
    return bool(await helpers().kernels.sha256(data) == expected)
