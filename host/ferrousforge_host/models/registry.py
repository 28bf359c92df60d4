"""Ollama registries (the OCI distribution protocol): where a name lives, its manifest, and the
anonymous bearer tokens registries hand out when they answer 401.

``llama3.2`` is ``<default registry>/v2/library/llama3.2/manifests/latest``; its layers are blobs at
``/v2/library/llama3.2/blobs/<digest>``. The pull itself (resume, verification, progress) is
``models.pull``'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from ferrousforge.errors import BadRequest, ForgeError
from ferrousforge.manifest import MANIFEST_MEDIA_TYPE, Manifest
from ferrousforge.names import DEFAULT_HOST, ModelName

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
TIMEOUT = httpx.Timeout(30.0, read=60.0)


class RegistryError(ForgeError):
    status = 502


class ManifestNotFound(ForgeError):
    status = 404


@dataclass(frozen=True)
class Registry:
    default: str = "https://registry.ollama.ai"  # where short names live ("": no registry pulls at all)
    insecure: bool = False  # plain http to every registry

    def repository(self, name: ModelName, insecure: bool = False) -> str | None:
        """``<scheme>://<host>/v2/<namespace>/<model>`` for a name; None when registry pulls are off."""
        if not self.default:
            return None
        host = self.default if name.host == DEFAULT_HOST else name.host
        if "://" not in host:
            plain = insecure or self.insecure or urlsplit(f"//{host}").hostname in LOOPBACK
            host = f"{'http' if plain else 'https'}://{host}"
        return f"{host.rstrip('/')}/v2/{name.namespace}/{name.model}"


@dataclass
class BearerToken:
    """Answers a registry's ``WWW-Authenticate: Bearer realm=...`` challenge with an anonymous token."""

    headers: dict[str, str] = field(default_factory=dict)

    def answer(self, challenge: str) -> dict[str, str]:
        scheme, _, rest = challenge.partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        realm = params.pop("realm", "")
        if scheme.lower() != "bearer" or not realm.startswith(("http://", "https://")):
            raise RegistryError(f"registry asks for an authentication this client lacks: {challenge}")
        try:
            response = httpx.get(realm, params=params, timeout=TIMEOUT, follow_redirects=True)
            body = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError) as exc:
            raise RegistryError(f"cannot get a registry token from {realm}: {exc}") from exc
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"registry token service {realm} gave no token (HTTP {response.status_code})")
        self.headers["Authorization"] = f"Bearer {token}"
        return self.headers


def fetch_manifest(repository: str, name: ModelName, auth: BearerToken) -> Manifest:
    """The manifest of ``name`` (blocking); unknown → 404, unreachable or refusing → 502."""
    url = f"{repository}/manifests/{name.tag}"
    headers = {"Accept": MANIFEST_MEDIA_TYPE}
    try:
        with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client:
            response = client.get(url, headers=headers)
            challenge = response.headers.get("www-authenticate", "")
            if response.status_code == 401 and challenge:
                response = client.get(url, headers={**headers, **auth.answer(challenge)})
    except httpx.ConnectError as exc:  # no route, no name: say what works without this registry
        raise RegistryError(
            f"pull model manifest: cannot reach {url}: {exc}; without a network, pull from a file "
            "(--from /path/model.gguf) or name a registry you can reach (FERROUSFORGE_REGISTRY)"
        ) from exc
    except httpx.HTTPError as exc:
        raise RegistryError(f"pull model manifest: cannot reach {url}: {exc}") from exc
    if response.status_code == 404:
        raise ManifestNotFound(f"pull model manifest: file does not exist: no model '{name}' at {url}")
    if response.status_code != 200:
        raise RegistryError(f"pull model manifest: HTTP {response.status_code} from {url}")
    try:
        manifest = Manifest.from_bytes(response.content)
    except (ValueError, BadRequest) as exc:
        kind = response.headers.get("content-type", "")
        raise RegistryError(f"pull model manifest: {url} sent no usable manifest ({kind}): {exc}") from exc
    return manifest


__all__ = ["BearerToken", "ManifestNotFound", "Registry", "RegistryError", "fetch_manifest"]
