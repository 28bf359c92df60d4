"""Who may call the host: an allowlist of browser origins (any web page can reach 127.0.0.1, so a
request from an origin not on the list is refused, not just left unreadable) and optional API keys.

``FERROUSFORGE_ORIGINS``: comma-separated origins, ``*`` as a wildcard (``https://*.example.com``);
localhost, 127.0.0.1, [::1] and 0.0.0.0 on any port and the app schemes Ollama allows (``app://``,
``file://``, ``tauri://``, ``vscode-webview://``, ``vscode-file://``) are always allowed.
``FERROUSFORGE_API_KEYS``: comma-separated keys; when set, every request but the public paths (``/``,
``/api/version``, ``/openapi.json``, the static site under ``/ui/``) needs ``Authorization: Bearer`` (or
Anthropic's ``X-API-Key``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ferrousforge_host.http import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOCAL = r"https?://(localhost|127\.0\.0\.1|\[::1\]|0\.0\.0\.0)(:\d+)?"
# the desktop and editor apps Ollama lets in by default (Electron, Tauri, VS Code webviews, files)
APP_SCHEMES = r"(app|file|tauri|vscode-webview|vscode-file)://.*"
PUBLIC_PATHS = frozenset({"/", "/api/version", "/openapi.json", "/ui"})
PUBLIC_PREFIX = (
    "/ui/"  # the static demo site and runtime bundle: no secrets, and it must load to ask for a key
)
NO_KEY = "missing or invalid API key (Authorization: Bearer <key>)"
ALLOW_HEADERS = (
    "Authorization, Content-Type, X-Request-ID, User-Agent, Accept, OpenAI-Organization, X-API-Key, "
    "Anthropic-Version, Anthropic-Beta"
)


def origin_patterns(listed: str) -> re.Pattern[str]:
    parts = [LOCAL, APP_SCHEMES]
    for origin in (o.strip() for o in listed.split(",")):
        if origin:
            parts.append(
                ".*" if origin == "*" else ".*".join(re.escape(p) for p in origin.rstrip("/").split("*"))
            )
    return re.compile("|".join(f"(?:{p})" for p in parts))


def public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)


class Guard:
    def __init__(self, app: ASGIApp, origins: str = "", api_keys: str = "") -> None:
        self.app = app
        self.allowed = origin_patterns(origins)
        self.keys = {k.strip() for k in api_keys.split(",") if k.strip()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        cors: list[tuple[bytes, bytes]] = []
        if origin is not None:
            if not self.allowed.fullmatch(origin):
                refused = f"origin '{origin}' is not allowed (FERROUSFORGE_ORIGINS)"
                await _reply(send, 403, error_body(scope["path"], 403, refused))
                return
            cors = [(b"access-control-allow-origin", origin.encode()), (b"vary", b"Origin")]
            if scope["method"] == "OPTIONS":  # preflight
                await _reply(
                    send,
                    204,
                    None,
                    [
                        *cors,
                        (b"access-control-allow-methods", b"GET, POST, DELETE, HEAD, OPTIONS"),
                        (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                        (b"access-control-max-age", b"600"),
                    ],
                )
                return
        if self.keys and not public(scope["path"]):
            given = headers.get("authorization", "")
            token = given[7:].strip() if given.lower().startswith("bearer ") else ""
            token = token or headers.get("x-api-key", "").strip()  # Anthropic's clients send this
            if token not in self.keys:
                await _reply(
                    send,
                    401,
                    error_body(scope["path"], 401, NO_KEY, code="invalid_api_key"),
                    [*cors, (b"www-authenticate", b"Bearer")],
                )
                return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start" and cors:
                message["headers"] = [*message.get("headers", []), *cors]
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _reply(
    send: Send, status: int, body: object, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body).encode() if body is not None else b""
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": data})
