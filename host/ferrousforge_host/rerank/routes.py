"""Routes for rerank (Cohere/Jina shape), under Ollama-style and OpenAI-style paths."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferrousforge.protocol.embed import RerankRequest
from ferrousforge_host.http import JSONResponse, read_json


async def rerank(request: Request) -> Response:
    req = RerankRequest.parse(await read_json(request))
    return JSONResponse(await request.app.state.rerank.rerank(req))


routes = [
    Route("/api/rerank", rerank, methods=["POST"]),
    Route("/v1/rerank", rerank, methods=["POST"]),
]
