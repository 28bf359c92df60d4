"""Routes that serve browsers.

- ``/ui/``: the demo site (``web/``) and ``/ui/runtime/``: the runtime bundle built by ``wasm/build.py``,
  both cross-origin isolated (COOP + COEP: wasm threads need ``SharedArrayBuffer``);
- ``GET /api/blobs/{digest}``: a model file by content address, with Range and immutable caching;
- ``POST /api/browser/model``: what a browser needs to run a model itself: its files by digest, its
  config, and what it takes (``ferrousforge.placement.Requirements``).
"""

from __future__ import annotations

import asyncio
import mimetypes
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from ferrousforge.catalogue import lookup
from ferrousforge.errors import ModelNotFound
from ferrousforge.gguf import special_tokens
from ferrousforge.manifest import ADAPTER, normalize_digest
from ferrousforge.names import ModelName
from ferrousforge.placement import Requirements, estimate_requirements
from ferrousforge.protocol.fields import field, require_object
from ferrousforge_host.http import JSONResponse, read_json
from ferrousforge_host.models.gguf_tokenizer import ensure_tokenizer
from ferrousforge_host.scheduler import Scheduler
from ferrousforge_host.store import BlobStore

REPO = Path(__file__).resolve().parents[3]
ISOLATION = [
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"require-corp"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
IMMUTABLE = "public, max-age=31536000, immutable"
mimetypes.add_type("application/typescript", ".mts")  # forge.d.mts (not a 3D model, as the table has it)


class IsolatedFiles(StaticFiles):
    """Static files with the cross-origin isolation headers and revalidated caching.

    ``?isolated=0`` on a page leaves the isolation headers out: the page then runs as a site that
    is not cross-origin isolated would (no wasm threads), to see what visitors of such sites get."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        plain = b"isolated=0" in scope.get("query_string", b"").split(b"&")

        async def send_isolated(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    *([] if plain else ISOLATION),
                    (b"cache-control", b"no-cache"),
                ]
            await send(message)

        await super().__call__(scope, receive, send_isolated)


def site_routes(web: str = "", runtime: str = "") -> list[Mount | Route]:
    web_dir = Path(web) if web else REPO / "web"
    runtime_dir = Path(runtime) if runtime else REPO / "build" / "runtime"
    return [
        Route("/ui", lambda request: RedirectResponse("/ui/"), methods=["GET"]),
        Mount("/ui/runtime", IsolatedFiles(directory=runtime_dir, check_dir=False), name="runtime"),
        Mount("/ui", IsolatedFiles(directory=web_dir, html=True, check_dir=False), name="ui"),
    ]


async def blob_file(request: Request) -> Response:
    """A stored blob, for browsers: content-addressed, so cacheable forever."""
    digest = normalize_digest(request.path_params["digest"])
    store: BlobStore = request.app.state.store
    if not store.has_blob(digest):
        raise ModelNotFound(f"blob {digest} not found")
    return FileResponse(
        store.blob_path(digest),
        media_type="application/octet-stream",
        headers={
            "Cache-Control": IMMUTABLE,
            "ETag": f'"{digest}"',
            "Cross-Origin-Resource-Policy": "same-origin",
        },
    )


def requirements(name: ModelName, kind: str, size: int, config: dict[str, Any]) -> Requirements:
    entry = lookup(name.display)
    if entry is not None and entry.browser:
        return Requirements.from_json(entry.browser)
    params = int(config.get("model_info", {}).get("general.parameter_count", 0) or 0)
    return estimate_requirements(kind, size, params)


# what the page's engines read (and check requests against, as the host does)
PAGE_CONFIG = ("pooling", "normalize", "max_length", "task", "languages", "multilingual", "voices")


async def browser_model(request: Request) -> Response:
    body = require_object(await read_json(request))
    name = ModelName.parse(field(body, "model", str))
    scheduler: Scheduler = request.app.state.scheduler
    spec, manifest = scheduler.spec(name)
    if spec.format == "gguf" and scheduler.store.read_only(name) is None:  # for the page's GPU engine
        family = str(spec.config.get("model_family", ""))
        manifest = await asyncio.to_thread(ensure_tokenizer, scheduler.store, name, manifest, family)
    files: dict[str, dict[str, Any]] = {}
    adapters = [x for x in manifest.layers if x.media_type == ADAPTER]
    for layer in manifest.layers:
        key = "model" if layer == manifest.model_layer else layer.name
        if layer in adapters:  # LoRA adapters, named as in the spec (the page leaves them to the host)
            key = f"adapter.{adapters.index(layer)}"
        if key:
            files[key] = {"digest": layer.digest, "size": layer.size, "url": f"/api/blobs/{layer.digest}"}
    kind = spec.task
    model_layer = manifest.model_layer
    largest = max((layer.size for layer in manifest.layers), default=0)
    req = requirements(name, kind, model_layer.size if model_layer else largest, spec.config)
    return JSONResponse(
        {
            "model": name.display,
            "kind": kind,
            "format": spec.format,
            "files": files,
            "config": {
                **{k: v for k, v in spec.config.items() if k in PAGE_CONFIG},
                **special_tokens(spec.config),  # the page renders templates as the host does
            },
            "template": spec.template,
            "system": spec.system,
            "parameters": spec.parameters,
            "messages": spec.messages,
            "requirements": req.to_json(),
        }
    )


api_routes = [
    Route("/api/blobs/{digest}", blob_file, methods=["GET"]),
    Route("/api/browser/model", browser_model, methods=["POST"]),
]
