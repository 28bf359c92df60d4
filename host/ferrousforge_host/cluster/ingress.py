"""The ingress: the host's HTTP API for the whole cluster, and the cluster's one model store.

Requests that run a model (generate, chat, embed, rerank and their OpenAI and Anthropic forms) go
to a model replica picked by Serve's multiplexing on the model's name, with the model's manifest as
the store has it now; their answers, streams included, are relayed as they come. Everything else
(tags, show, pull, create, copy, delete, blobs, /ui/, ...) is answered here by the host's own app,
over the one store, so manifests never diverge. ``/api/ps`` and ``/api/tags`` say which replica
holds what; ``/api/cluster`` lists the replicas; ``/metrics/{replica}`` is one replica's metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route

from ferrousforge.errors import BadRequest, ForgeError, ModelNotFound, Unavailable
from ferrousforge.manifest import normalize_digest
from ferrousforge.names import ModelName
from ferrousforge_host.app import create_app, forge_error, not_found, unexpected_error
from ferrousforge_host.cluster.bridge import Call, Head
from ferrousforge_host.cluster.config import ClusterConfig
from ferrousforge_host.config import Settings
from ferrousforge_host.http import JSONResponse, error_body, parse_json, printable, read_body
from ferrousforge_host.store import BlobStore

log = logging.getLogger("ferrousforge.cluster")
# bytes per message when a replica fetches a blob: under gRPC's 4 MiB limit on a message, with room
# for its framing (handles reach replicas over gRPC: SERVE_TUNING)
CHUNK = 1 << 20


class NotFound(ForgeError):
    status = 404


TRIES = 3  # a replica that died before answering: the request goes to another (nothing was sent)
# The routes that run a model: forwarded to a replica
MODEL_ROUTES = (
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/api/embeddings",
    "/api/rerank",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/rerank",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
)


# Model routes whose answers are never streamed, and the Ollama ones that stream unless told not to
WHOLE_ROUTES = (
    "/api/embed",
    "/api/embeddings",
    "/api/rerank",
    "/v1/embeddings",
    "/v1/rerank",
    "/v1/messages/count_tokens",
)
STREAMED_BY_DEFAULT = ("/api/generate", "/api/chat")


def target(path: str, body: bytes) -> tuple[str, bool]:
    """The model a request names, in its canonical short form ("" when it names none: the replica's
    app then answers the proper 400), and whether its answer may be streamed."""
    try:
        data = parse_json(body)  # the host's bounds: no body can exhaust this parse
    except BadRequest:
        return "", True
    if not isinstance(data, dict):
        return "", True
    name = data.get("model") or data.get("name")
    try:
        model = ModelName.parse(name).display if isinstance(name, str) else ""
    except BadRequest:
        model = ""
    if path in WHOLE_ROUTES:
        return model, False
    stream = data.get("stream", path in STREAMED_BY_DEFAULT)
    return model, stream is not False if path in STREAMED_BY_DEFAULT else stream is True


def error_chunk(path: str, content_type: str, message: str) -> bytes:
    """An error as the last line of a stream already under way, in the stream's own form."""
    body = orjson.dumps(error_body(path, 500, message))
    if content_type.startswith("application/x-ndjson"):
        return body + b"\n"
    if not content_type.startswith("text/event-stream"):
        return b""  # a plain body cut short: nothing can be added to it
    if path.startswith("/v1/messages"):
        return b"event: error\ndata: " + body + b"\n\n"
    return b"data: " + body + b"\n\ndata: [DONE]\n\n"


@serve.ingress()
class Ingress:
    def __init__(self, replicas: DeploymentHandle, settings: Settings, config: ClusterConfig) -> None:
        self.host = create_app(settings)
        self.store: BlobStore = self.host.state.store
        self.replicas = replicas
        self.config = config
        self.limit = settings.max_body
        self.reports: dict[str, dict[str, Any]] = {}

    def __serve_build_asgi_app__(self) -> Starlette:
        return Starlette(
            routes=[
                *(Route(path, self.forward, methods=["POST"]) for path in MODEL_ROUTES),
                Route("/api/ps", self.ps, methods=["GET"]),
                Route("/api/tags", self.tags, methods=["GET"]),
                Route("/api/cluster", self.cluster, methods=["GET"]),
                Route("/metrics/{replica}", self.replica_metrics, methods=["GET"]),
                Mount("/", app=self.host),
            ],
            exception_handlers={
                ForgeError: forge_error,
                404: not_found,
                405: not_found,
                Exception: unexpected_error,  # JSON, as the host's own
            },
        )

    # -- model requests ---------------------------------------------------------------------
    async def forward(self, request: Request) -> Response:
        body = await read_body(request, self.limit)
        model, streamed = target(request.url.path, body)
        call = Call(
            request.method,
            request.url.path,
            request.scope["query_string"],
            list(request.scope["headers"]),
            body,
        )
        manifest = self.manifest(model)
        if model and manifest is None:  # answered here: a replica would take on the name to say so
            raise ModelNotFound.to_run(model)
        for attempt in range(TRIES):
            handle = self.replicas.options(stream=streamed, multiplexed_model_id=model)
            stream: DeploymentResponseGenerator | None = None
            try:
                if streamed:
                    stream = cast(DeploymentResponseGenerator, handle.call.remote(call, manifest))
                    head = await stream.__anext__()
                else:
                    head = await handle.call_whole.remote(call, manifest)
            except (RayActorError, ActorUnavailableError) as exc:
                if stream is not None:
                    stream.cancel()
                if attempt == TRIES - 1:
                    raise Unavailable(f"no model replica could take the request: {exc}", 1) from None
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            except StopAsyncIteration:
                raise ForgeError("the model replica ended without answering") from None
            assert isinstance(head, Head)
            return self.relay(request.url.path, head, stream)
        raise AssertionError("unreachable")

    def relay(self, path: str, head: Head, stream: DeploymentResponseGenerator | None) -> Response:
        """Pass a replica's answer on: whole, or chunk by chunk as it streams; if the replica dies
        midway, the stream ends with an error line in its own form (NDJSON, or SSE for OpenAI and
        Anthropic)."""
        # the proxy adds its own x-request-id (the one the replica logged: it came with the request)
        dropped = (b"transfer-encoding", b"connection", b"x-request-id")
        headers = [(k, v) for k, v in head.headers if k.lower() not in dropped]
        if head.done or stream is None:
            if stream is not None:
                stream.cancel()
            response = Response(head.body, status_code=head.status)
            response.raw_headers = headers
            return response
        content_type = next((v.decode() for k, v in headers if k.lower() == b"content-type"), "")
        replica = next((v.decode() for k, v in headers if k.lower() == b"x-ferrousforge-replica"), "?")

        async def chunks() -> AsyncIterator[bytes]:
            try:
                if head.body:
                    yield head.body
                async for chunk in stream:
                    yield chunk
            except (RayActorError, ActorUnavailableError) as exc:
                log.warning("model replica %s died mid-response: %s", replica, exc)
                yield error_chunk(
                    path, content_type, f"model replica {replica} has terminated: {type(exc).__name__}"
                )
            except Exception as exc:
                log.exception("model replica %s failed mid-response", replica)
                yield error_chunk(path, content_type, printable(f"model replica {replica} failed: {exc}"))
            finally:
                stream.cancel()

        response = StreamingResponse(chunks(), status_code=head.status)
        response.raw_headers = headers
        return response

    def manifest(self, model: str) -> bytes | None:
        if not model:
            return None
        try:
            return self.store.get(ModelName.parse(model)).manifest.to_bytes()
        except ModelNotFound:
            return None

    # -- what replicas ask of the ingress ---------------------------------------------------
    async def blob(self, digest: str) -> AsyncIterator[bytes]:
        """A blob's bytes by digest, for a replica whose node lacks it (it verifies them)."""
        path = self.store.blob_path(normalize_digest(digest))
        if not path.is_file():
            raise NotFound(f"blob {digest} not found")
        with path.open("rb") as f:
            while block := await asyncio.to_thread(f.read, CHUNK):
                yield block

    async def report(self, snapshot: dict[str, Any]) -> list[str]:
        """A replica says what it holds; it gets back the models the cluster has."""
        self.reports[snapshot["replica"]] = {**snapshot, "seen": time.monotonic()}
        return [m.name.display for m in self.store.list()]

    def live(self) -> list[dict[str, Any]]:
        """Replicas heard from lately (a dead one stops reporting and drops out)."""
        horizon = time.monotonic() - max(3 * self.config.report_s, 5.0)
        for key in [k for k, r in self.reports.items() if r["seen"] < horizon]:
            del self.reports[key]
        return sorted(self.reports.values(), key=lambda r: str(r["replica"]))

    # -- the cluster's view -----------------------------------------------------------------
    async def ps(self, request: Request) -> Response:
        models = [{**m, "replica": r["replica"], "node": r["node"]} for r in self.live() for m in r["models"]]
        return JSONResponse({"models": sorted(models, key=lambda m: (m["name"], m["replica"]))})

    async def tags(self, request: Request) -> Response:
        live = self.live()
        tags = self.host.state.models.tags()
        for m in tags["models"]:
            m["replicas"] = [r["replica"] for r in live if m["name"] in r["stored"]]
        return JSONResponse(tags)

    async def cluster(self, request: Request) -> Response:
        now = time.monotonic()
        replicas = [
            {
                "replica": r["replica"],
                "node": r["node"],
                "pid": r["pid"],
                "loaded": [m["name"] for m in r["models"]],
                "stored": r["stored"],
                "fetched": r["fetched"],
                "reported_s_ago": round(now - r["seen"], 3),
            }
            for r in self.live()
        ]
        return JSONResponse({"replicas": replicas, "config": json.loads(json.dumps(self.config.__dict__))})

    async def replica_metrics(self, request: Request) -> Response:
        for r in self.live():
            if r["replica"] == request.path_params["replica"]:
                return PlainTextResponse(r["metrics"], media_type="text/plain; version=0.0.4; charset=utf-8")
        raise NotFound(f"no replica {request.path_params['replica']}")

    async def check_health(self) -> None:
        if not self.store.root.is_dir():
            raise RuntimeError(f"the cluster store {self.store.root} is gone")
