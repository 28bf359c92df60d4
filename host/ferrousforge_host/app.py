"""The host's ASGI application: Ollama's API, one router per capability."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import ferrousforge
from ferrousforge.errors import ForgeError, ModelNotFound
from ferrousforge.options import Options, parse_keep_alive
from ferrousforge_host.anthropic import routes as anthropic
from ferrousforge_host.audio.routes import routes as audio_routes
from ferrousforge_host.audio.serving import AudioService
from ferrousforge_host.config import Settings
from ferrousforge_host.embed.routes import routes as embed_routes
from ferrousforge_host.embed.serving import EmbeddingService
from ferrousforge_host.engines import llamacpp, llamacpp_embed, onnx, piper, wgpu, wgpu_gguf, whisper  # noqa: F401  (registers the engines)
from ferrousforge_host.generate.routes import routes as generate_routes
from ferrousforge_host.generate.serving import GenerationService
from ferrousforge_host.guard import Guard
from ferrousforge_host.http import CancelOnDisconnect, JSONResponse, error_body
from ferrousforge_host.models.registry import Registry
from ferrousforge_host.models.routes import routes as model_routes
from ferrousforge_host.models.serving import ModelService
from ferrousforge_host.observability import Metrics, Observe, metrics_endpoint
from ferrousforge_host.openai.responses import routes as responses_routes
from ferrousforge_host.openai.routes import routes as openai_routes
from ferrousforge_host.openapi.routes import routes as openapi_routes
from ferrousforge_host.rerank.routes import routes as rerank_routes
from ferrousforge_host.rerank.serving import RerankService
from ferrousforge_host.scheduler import Scheduler, default_memory_budget
from ferrousforge_host.store import BlobStore
from ferrousforge_host.web.routes import api_routes as web_api_routes
from ferrousforge_host.web.routes import site_routes

log = logging.getLogger("ferrousforge")


# the Ollama API version this host speaks: clients gate features (thinking, logprobs, /v1/messages) on it
OLLAMA_VERSION = "0.14.3"


async def root(request: Request) -> Response:
    # the words Ollama's clients look for; which server answered is in the header
    return PlainTextResponse(
        "Ollama is running", headers={"X-FerrousForge-Version": ferrousforge.__version__}
    )


async def version(request: Request) -> Response:
    return JSONResponse(
        {"version": OLLAMA_VERSION, "ferrousforge": ferrousforge.__version__},
        headers={"X-FerrousForge-Version": ferrousforge.__version__},
    )


async def forge_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ForgeError)
    code = "model_not_found" if isinstance(exc, ModelNotFound) else None  # (OpenAI's)
    body = error_body(request.url.path, exc.status, exc.message, code)  # in the shape of the path's API
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)


# OpenAI's paths without their /v1: an OpenAI client whose base_url lacks it
_V1_PATHS = ("/chat/completions", "/completions", "/embeddings", "/models", "/responses", "/audio/")


async def not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    path = request.url.path
    detail = "method not allowed" if status == 405 else f"no route for {path}"
    if status == 404 and path.startswith(_V1_PATHS):  # answered in OpenAI's shape, which its SDK reads
        detail += f": did you mean /v1{path}? (an OpenAI client's base_url ends in /v1)"
        path = "/v1" + path
    return JSONResponse(error_body(path, status, detail, None), status_code=status)


def create_app(settings: Settings) -> Starlette:
    store = BlobStore(settings.models, settings.ollama_store)
    keep_alive = parse_keep_alive(settings.keep_alive, 300.0)
    base = Options(
        num_ctx=settings.num_ctx,
        num_thread=settings.num_thread,
        num_parallel=settings.num_parallel,
        kv_cache_type=settings.kv_cache_type,
        flash_attention=settings.flash_attention,
    )
    scheduler = Scheduler(
        store,
        keep_alive,
        base,
        batching=bool(settings.batching),
        max_memory=settings.max_memory or default_memory_budget(),
        max_loaded=settings.max_loaded_models,
        max_queue=settings.max_queue,
        runners=bool(settings.runners),
        engines=settings.engine,
        load_timeout=parse_keep_alive(settings.load_timeout, 300.0) or None,  # 0 or negative: none
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await scheduler.shutdown()

    app = Starlette(
        routes=[
            Route("/", root, methods=["GET", "HEAD"]),
            Route("/api/version", version, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            *generate_routes,
            *embed_routes,
            *rerank_routes,
            *openai_routes,
            *audio_routes,
            *responses_routes,
            *anthropic.routes,
            *openapi_routes,
            *model_routes,
            *web_api_routes,
            *site_routes(settings.web_dir, settings.runtime_dir),
        ],
        exception_handlers={
            ForgeError: forge_error,
            Exception: unexpected_error,
            404: not_found,
            405: not_found,
        },
        lifespan=lifespan,
    )
    metrics = Metrics(scheduler)
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(Observe, metrics=metrics)
    app.add_middleware(Guard, origins=settings.origins, api_keys=settings.api_keys)  # outermost
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.store = store
    app.state.scheduler = scheduler
    app.state.generation = GenerationService(scheduler, keep_alive, metrics)
    registry = Registry(settings.registry, bool(settings.insecure_registry))
    app.state.models = ModelService(store, scheduler, settings.import_folders, registry)
    app.state.embeddings = EmbeddingService(scheduler, keep_alive)
    app.state.rerank = RerankService(scheduler, keep_alive)
    app.state.audio = AudioService(scheduler, keep_alive, settings)
    return app
