"""Model files in the browser: fetched from the host's content-addressed blob URLs, kept in the Cache
API, verified by sha256 before use (``fetchBlob`` in ``web/forge.mjs``, which the boot-time preload
uses too). A corrupt cached copy is replaced; a storage error (quota) means no cache, never a broken
page. Bytes stay in JS (a ``Uint8Array``)."""

from __future__ import annotations

import contextlib
from typing import Any

import js

from ferrousforge.browser.bridge import absent, helpers, jsobj
from ferrousforge.errors import ForgeError


class BlobCache:
    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.headers = headers

    async def get(self, url: str, digest: str) -> Any:
        """The file's verified bytes (a JS Uint8Array): preloaded, cached, or downloaded now."""
        forge_js = helpers()
        early = await forge_js.takePrefetched(digest)  # fetched and verified while Pyodide booted
        if not absent(early):
            return early
        try:
            return await forge_js.fetchBlob(self.base + url, digest, jsobj(self.headers))
        except Exception as exc:  # HTTP error, digest mismatch
            raise ForgeError(str(exc)) from exc

    async def usage(self) -> dict[str, Any]:
        forge_js = helpers()
        stats = forge_js.blobStats
        entries = 0
        if not stats.disabled:
            with contextlib.suppress(Exception):
                entries = len(await (await js.caches.open(forge_js.CACHE)).keys())
        estimate: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            estimate = (await js.navigator.storage.estimate()).to_py()
        return {
            "entries": entries,
            "usage": int(estimate.get("usage", 0) or 0),
            "quota": int(estimate.get("quota", 0) or 0),
            "downloads": int(stats.downloads),
            "hits": int(stats.hits),
            **({"disabled": str(stats.disabled)} if stats.disabled else {}),
        }

    async def clear(self) -> None:
        with contextlib.suppress(Exception):
            await js.caches.delete(helpers().CACHE)
