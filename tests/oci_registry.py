"""A small OCI registry for pull and push tests, as the distribution protocol answers: manifests and
blobs under ``/v2/<namespace>/<model>/``, HTTP Range, monolithic blob uploads (POST, then PUT with
``?digest=``, checked) and manifest puts (refused while a blob they name is missing), and on request
a bearer-token challenge, a blob transfer cut off midway, or a blob with the wrong bytes."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from ferrousforge.manifest import DOCKER_CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE

from fileserver import running, send_range


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Registry:
    url: str = ""
    manifests: dict[str, bytes] = field(default_factory=dict)  # "<ns>/<model>:<tag>" → manifest
    blobs: dict[str, bytes] = field(default_factory=dict)
    token: str | None = None  # when set, every /v2/ request needs "Authorization: Bearer <token>"
    cut: dict[str, int] = field(
        default_factory=dict
    )  # digest → bytes sent before the connection drops (once)
    wrong: set[str] = field(default_factory=set)  # digests served with one byte flipped
    served: dict[str, int] = field(default_factory=dict)  # digest → body bytes sent so far
    requests: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # path, Range, auth
    uploaded: list[str] = field(default_factory=list)  # digests of blobs pushed, in order

    def add(self, repo: str, layers: list[tuple[str, bytes]], config: Mapping[str, object]) -> str:
        """Publish ``repo`` ("library/tiny:latest") with these (media type, content) layers."""
        config_bytes = json.dumps(config).encode()
        self.blobs[digest(config_bytes)] = config_bytes
        entries = []
        for media_type, data in layers:
            self.blobs[digest(data)] = data
            entries.append({"mediaType": media_type, "digest": digest(data), "size": len(data)})
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": DOCKER_CONFIG_MEDIA_TYPE,
                "digest": digest(config_bytes),
                "size": len(config_bytes),
            },
            "layers": entries,
        }
        self.manifests[repo] = json.dumps(manifest).encode()
        return digest(self.manifests[repo])


def _handler(reg: Registry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str, headers: dict[str, str] | None = None) -> None:
            body = json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()
            self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

        def _authorized(self, repo: str, scope: str) -> bool:
            if reg.token and self.headers.get("Authorization") != f"Bearer {reg.token}":
                realm = f'realm="{reg.url}/token",service="test-registry"'
                challenge = f'Bearer {realm},scope="repository:{repo}:{scope}"'
                self._error(401, "UNAUTHORIZED", {"WWW-Authenticate": challenge})
                return False
            return True

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization")
            reg.requests.append((self.path, self.headers.get("Range"), auth))
            if self.path.startswith("/token"):
                self._send(
                    200, json.dumps({"token": reg.token}).encode(), {"Content-Type": "application/json"}
                )
                return
            m = re.match(r"^/v2/([^/]+/[^/]+)/(manifests|blobs)/([^/?]+)$", self.path)
            if not m:
                self._error(404, "NAME_UNKNOWN")
                return
            repo, kind, ref = m.groups()
            if not self._authorized(repo, "pull"):
                return
            if kind == "manifests":
                manifest = reg.manifests.get(f"{repo}:{ref}")
                if manifest is None:
                    self._error(404, "MANIFEST_UNKNOWN")
                    return
                self._send(200, manifest, {"Content-Type": MANIFEST_MEDIA_TYPE})
                return
            self._blob(ref)

        def _blob(self, ref: str) -> None:
            data = reg.blobs.get(ref)
            if data is None:
                self._error(404, "BLOB_UNKNOWN")
                return
            if ref in reg.wrong:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            body = send_range(self, data)
            if body is None:
                self._error(416, "RANGE_INVALID")
                return
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if ref in reg.cut:
                body = body[: reg.cut.pop(ref)]
                self.close_connection = True
            self.wfile.write(body)
            self.wfile.flush()
            reg.served[ref] = reg.served.get(ref, 0) + len(body)
            if self.close_connection:
                self.connection.shutdown(2)

        def do_HEAD(self) -> None:
            reg.requests.append((self.path, None, self.headers.get("Authorization")))
            m = re.match(r"^/v2/([^/]+/[^/]+)/blobs/([^/?]+)$", self.path)
            if m and not self._authorized(m.group(1), "push,pull"):
                return
            data = reg.blobs.get(m.group(2)) if m else None
            self._send(200 if data is not None else 404, data or b"")  # its length, no body

        def do_POST(self) -> None:
            reg.requests.append((self.path, None, self.headers.get("Authorization")))
            m = re.match(r"^/v2/([^/]+/[^/]+)/blobs/uploads/$", self.path)
            if not m:
                self._error(404, "NAME_UNKNOWN")
                return
            if self._authorized(m.group(1), "push,pull"):
                location = f"/v2/{m.group(1)}/blobs/uploads/{len(reg.requests)}?state=open"
                self._send(202, b"", {"Location": location})

        def do_PUT(self) -> None:
            reg.requests.append((self.path, None, self.headers.get("Authorization")))
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            upload = re.match(
                r"^/v2/([^/]+/[^/]+)/blobs/uploads/[^?]+\?state=open&digest=(sha256:[0-9a-f]{64})$", self.path
            )
            manifest = re.match(r"^/v2/([^/]+/[^/]+)/manifests/([^/?]+)$", self.path)
            repo = (upload or manifest).group(1) if upload or manifest else ""
            if not repo:
                self._error(404, "NAME_UNKNOWN")
            elif not self._authorized(repo, "push,pull"):
                return
            elif upload:
                if digest(body) != upload.group(2):
                    self._error(400, "DIGEST_INVALID")
                    return
                reg.blobs[upload.group(2)] = body
                reg.uploaded.append(upload.group(2))
                self._send(201, b"", {"Docker-Content-Digest": upload.group(2)})
            elif manifest:
                named = json.loads(body)
                if any(x["digest"] not in reg.blobs for x in [named["config"], *named["layers"]]):
                    self._error(400, "MANIFEST_BLOB_UNKNOWN")
                    return
                reg.manifests[f"{repo}:{manifest.group(2)}"] = body
                self._send(201, b"", {"Docker-Content-Digest": digest(body)})

    return Handler


@contextmanager
def serve_registry() -> Iterator[Registry]:
    reg = Registry()
    with running(_handler(reg)) as reg.url:
        yield reg
