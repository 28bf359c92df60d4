"""Push a model to an OCI registry as ``ollama push`` does (the distribution protocol): each blob the
registry lacks is uploaded (HEAD to ask, POST to open an upload, one PUT with the digest), then the
manifest is put under the tag. ``ollama pull`` and ``ferrousforge pull`` read it back.

Ollama's own registry takes pushes only when signed with an ollama.com account key, which
FerrousForge does not hold: push to a registry of your own (``myhost:5000/team/model``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from ferrousforge.errors import ForgeError
from ferrousforge.manifest import MANIFEST_MEDIA_TYPE, Layer
from ferrousforge.names import ModelName
from ferrousforge_host.models.registry import TIMEOUT, BearerToken, Registry, RegistryError
from ferrousforge_host.store import BlobStore

Event = dict[str, Any]


class PushRefused(ForgeError):
    """A push this server cannot make: no registry configured, or Ollama's own (key-signed pushes)."""

    status = 403


CHUNK = 1 << 20
OLLAMA_HOSTS = ("registry.ollama.ai", "ollama.com")


async def push(
    store: BlobStore, registry: Registry | None, name: ModelName, insecure: bool
) -> AsyncIterator[Event]:
    """Checks what can be checked before the stream starts (the model, the registry), then streams
    Ollama's push events: ``retrieving manifest``, ``pushing <digest>`` with total/completed,
    ``pushing manifest``, ``success``."""
    model = store.get(name)  # a plain 404 for an unknown model
    repository = registry.repository(name, insecure) if registry else None
    if repository is None:
        raise PushRefused("registry pushes are turned off on this server (no registry configured)")
    if urlsplit(repository).hostname in OLLAMA_HOSTS:
        raise PushRefused(
            f"pushing to {urlsplit(repository).hostname} needs an ollama.com account key, which FerrousForge "
            f"does not hold; push to your own registry: copy the model to a name there "
            f"(ferrousforge cp {name.display} HOST:PORT/NAMESPACE/MODEL) and push that"
        )
    return _push(
        store, repository, name, (*model.manifest.layers, model.manifest.config), model.manifest.to_bytes()
    )


async def _push(
    store: BlobStore, repository: str, name: ModelName, layers: tuple[Layer, ...], manifest: bytes
) -> AsyncIterator[Event]:
    auth = BearerToken()
    yield {"status": "retrieving manifest"}
    async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=True) as client:
        for layer in layers:
            label = {"status": f"pushing {layer.digest.split(':', 1)[-1][:12]}", "digest": layer.digest}
            yield {**label, "total": layer.size, "completed": 0}
            head = await _send(client, auth, "HEAD", f"{repository}/blobs/{layer.digest}")
            if head.status_code != 200:
                await _upload(client, auth, repository, layer, store.blob_path(layer.digest))
            yield {**label, "total": layer.size, "completed": layer.size}
        yield {"status": "pushing manifest"}
        headers = {"Content-Type": MANIFEST_MEDIA_TYPE}
        url = f"{repository}/manifests/{name.tag}"
        answer = await _send(client, auth, "PUT", url, content=manifest, headers=headers)
        _expect(answer, (200, 201), f"push manifest to {url}")
    yield {"status": "success"}


async def _upload(
    client: httpx.AsyncClient, auth: BearerToken, repository: str, layer: Layer, path: Path
) -> None:
    """One blob in a monolithic upload: POST opens it, a PUT of the bytes with ``?digest=`` closes it."""
    opened = await _send(client, auth, "POST", f"{repository}/blobs/uploads/")
    _expect(opened, (202,), f"start the upload of {layer.digest}")
    location = urljoin(str(opened.url), opened.headers.get("location", ""))
    put = f"{location}{'&' if '?' in location else '?'}digest={layer.digest}"

    async def body() -> AsyncIterator[bytes]:
        with path.open("rb") as blob:
            while chunk := blob.read(CHUNK):
                yield chunk

    headers = {**auth.headers, "Content-Type": "application/octet-stream", "Content-Length": str(layer.size)}
    try:
        done = await client.put(put, content=body(), headers=headers)
    except httpx.HTTPError as exc:
        raise RegistryError(f"upload of {layer.digest} failed: {exc}") from exc
    _expect(done, (201, 204), f"upload {layer.digest}")


async def _send(
    client: httpx.AsyncClient, auth: BearerToken, method: str, url: str, **request: Any
) -> httpx.Response:
    """A bodiless or small request; a 401 with a bearer challenge is answered (an anonymous token
    for the push scope) and the request made once more."""
    extra = request.pop("headers", {})
    try:
        response = await client.request(method, url, headers={**auth.headers, **extra}, **request)
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code == 401 and challenge:
            await asyncio.to_thread(auth.answer, challenge)
            response = await client.request(method, url, headers={**auth.headers, **extra}, **request)
    except httpx.HTTPError as exc:
        raise RegistryError(f"cannot reach the registry at {url}: {exc}") from exc
    return response


def _expect(response: httpx.Response, statuses: tuple[int, ...], what: str) -> None:
    if response.status_code not in statuses:
        detail = response.text[:200].strip()
        raise RegistryError(
            f"{what}: HTTP {response.status_code} from the registry{': ' + detail if detail else ''}"
        )
