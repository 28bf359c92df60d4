"""Routes for model management and blob upload."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from ferrousforge.errors import BadRequest
from ferrousforge.manifest import normalize_digest
from ferrousforge.names import ModelName
from ferrousforge.protocol.fields import field, require_object
from ferrousforge_host.http import JSONResponse, read_json, respond
from ferrousforge_host.models import push as pushing
from ferrousforge_host.models.serving import ModelService


def service(request: Request) -> ModelService:
    return request.app.state.models


def _name(body: dict[str, object], *keys: str) -> ModelName:
    for key in keys:
        if body.get(key) is not None:
            return ModelName.parse(field(body, key, str))
    raise BadRequest(f"'{keys[0]}' is required")


async def tags(request: Request) -> Response:
    return JSONResponse(service(request).tags())


async def show(request: Request) -> Response:
    body = require_object(await read_json(request))
    verbose = field(body, "verbose", bool, False)
    return JSONResponse(service(request).show(_name(body, "model", "name"), verbose))


async def delete(request: Request) -> Response:
    body = require_object(await read_json(request))
    await service(request).delete(_name(body, "model", "name"))
    return JSONResponse({})


async def copy(request: Request) -> Response:
    body = require_object(await read_json(request))
    service(request).copy(_name(body, "source"), _name(body, "destination"))
    return JSONResponse({})


async def ps(request: Request) -> Response:
    return JSONResponse(service(request).ps())


async def info(request: Request) -> Response:
    return JSONResponse(await service(request).info())


async def pull(request: Request) -> Response:
    body = require_object(await read_json(request))
    name = _name(body, "model", "name")
    source = field(body, "source", str, None)
    if source and "\0" in source:  # no path or URL holds one (os calls raise ValueError on it)
        raise BadRequest("'source' must not contain NUL characters")
    stream = field(body, "stream", bool, True)
    insecure = field(body, "insecure", bool, False)  # Ollama's: plain http to the registry
    return await respond(await service(request).puller.pull(name, source, insecure), stream)


async def push(request: Request) -> Response:
    body = require_object(await read_json(request))
    name = _name(body, "model", "name")
    stream = field(body, "stream", bool, True)
    insecure = field(body, "insecure", bool, False)  # plain http to the registry
    models = service(request)
    return await respond(await pushing.push(models.store, models.puller.registry, name, insecure), stream)


async def create(request: Request) -> Response:
    body = require_object(await read_json(request))
    stream = field(body, "stream", bool, True)
    return await respond(service(request).create(body), stream)


async def blob(request: Request) -> Response:
    """HEAD: is the blob here? POST: upload it; kept only if its sha256 matches the URL."""
    digest = normalize_digest(request.path_params["digest"])
    store = service(request).store
    if request.method == "HEAD" or store.has_blob(digest):
        return Response(status_code=200 if store.has_blob(digest) else 404)
    try:
        with store.scratch("upload") as partial:
            failed: OSError | None = None
            with partial.open("wb") as out:
                async for part in request.stream():
                    try:
                        if failed is None:
                            out.write(part)
                    except OSError as exc:  # (a full disk) the rest is read, so the client hears why
                        failed = exc
            if failed is not None:
                raise failed
            await asyncio.to_thread(store.commit, partial, digest)
    except ClientDisconnect:  # nobody is left to answer; nothing was kept
        return Response(status_code=400)
    return Response(status_code=201)


routes = [
    Route("/api/tags", tags, methods=["GET"]),
    Route("/api/show", show, methods=["POST"]),
    Route("/api/delete", delete, methods=["DELETE", "POST"]),
    Route("/api/copy", copy, methods=["POST"]),
    Route("/api/ps", ps, methods=["GET"]),
    Route("/api/info", info, methods=["GET"]),
    Route("/api/pull", pull, methods=["POST"]),
    Route("/api/push", push, methods=["POST"]),
    Route("/api/create", create, methods=["POST"]),
    Route("/api/blobs/{digest}", blob, methods=["HEAD", "POST"]),
]
