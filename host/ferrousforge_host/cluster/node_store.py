"""A replica's store on its node, kept in step with the cluster's one store (the ingress's).

Blobs are content-addressed, so keeping in step is simple: the ingress sends the model's manifest
with each request; a blob the node lacks is fetched by digest from the ingress, and kept only once
its sha256 matches (``BlobStore.commit``); the manifest is written last. Models are verified blob by
blob the first time a replica takes them on, so a blob corrupted on the node is fetched again.
With no node folder of its own the replica reads the ingress's folder (one machine, or a shared
file system) and nothing is copied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from ferrousforge.errors import ForgeError
from ferrousforge.manifest import Manifest
from ferrousforge.names import ModelName
from ferrousforge_host.store import BlobStore, DigestMismatch

log = logging.getLogger("ferrousforge.cluster")
Fetch = Callable[[str], AsyncIterator[bytes]]  # a blob's bytes by digest, from a node that has it


class CorruptBlob(ForgeError):
    """The bytes fetched for a blob do not match its digest: the source is damaged."""

    status = 502


class NodeStore:
    def __init__(self, store: BlobStore, fetch: Fetch, shared: bool) -> None:
        self.store = store
        self.fetch = fetch
        self.shared = shared  # the ingress's own folder: never written from here
        self._locks: dict[str, asyncio.Lock] = {}
        self.fetched: list[str] = []  # digests fetched by this replica, oldest first (reported)

    async def sync(self, name: ModelName, manifest: bytes | None, verify: bool = False) -> None:
        """Make the node hold exactly what the cluster holds under ``name`` (None: nothing)."""
        if self.shared:
            return
        path = self.store.manifest_path(name)
        if manifest is None:  # deleted in the cluster: forget it here too
            if path.is_file():
                await asyncio.to_thread(self.store.delete, name)
            return
        wanted = Manifest.from_bytes(manifest)
        for layer in (wanted.config, *wanted.layers):
            async with self._locks.setdefault(layer.digest, asyncio.Lock()):
                await self._check(layer.digest, layer.size, verify)
        data = wanted.to_bytes()
        if not path.is_file() or path.read_bytes() != data:
            self.store.put(name, wanted)

    async def _check(self, digest: str, size: int, verify: bool) -> None:
        """Fetch the blob unless the node has it whole: the right size on every request, the right
        sha256 too when ``verify``; a damaged copy is removed first."""
        path = self.store.own_blob_path(digest)
        if path.is_file() and path.stat().st_size != size:
            log.warning("blob %s on this node has the wrong size: fetched again", digest)
            path.unlink(missing_ok=True)
        if verify and path.is_file() and not await asyncio.to_thread(self.store.verify_blob, digest):
            log.warning("blob %s on this node does not match its digest: fetched again", digest)
        if not path.is_file():
            await self._fetch(digest)

    async def _fetch(self, digest: str) -> None:
        with self.store.scratch("fetch") as partial:
            with partial.open("wb") as out:
                async for chunk in self.fetch(digest):
                    out.write(chunk)
            try:
                await asyncio.to_thread(self.store.commit, partial, digest)
            except DigestMismatch as exc:
                raise CorruptBlob(
                    f"blob {digest} fetched from the cluster store is damaged ({exc.message})"
                ) from None
        self.fetched.append(digest)

    def names(self) -> list[str]:
        return [m.name.display for m in self.store.list()]
