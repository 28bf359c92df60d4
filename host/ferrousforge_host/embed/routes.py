"""Routes for embeddings in Ollama's and OpenAI's shapes."""

from __future__ import annotations

import base64

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferrousforge.protocol.embed import EmbedRequest
from ferrousforge_host.embed.serving import EmbeddingService
from ferrousforge_host.http import JSONResponse, read_json


def service(request: Request) -> EmbeddingService:
    service: EmbeddingService = request.app.state.embeddings
    return service


async def embed(request: Request) -> Response:
    """Ollama: an empty ``input`` list answers an empty list (and loads the model), as Ollama does."""
    req = EmbedRequest.ollama(await read_json(request))
    out = await service(request).embed(req)
    return JSONResponse(
        {
            "model": req.model.display,
            "embeddings": out.vectors,
            "total_duration": out.total_duration,
            "load_duration": out.load_duration,
            "prompt_eval_count": out.tokens,
            "accelerator": out.accelerator,
        }
    )


async def embeddings_legacy(request: Request) -> Response:
    req = EmbedRequest.legacy(await read_json(request))
    out = await service(request).embed(req, normalize=False)  # as Ollama's: the model's own vector
    return JSONResponse({"embedding": out.vectors[0] if len(out.vectors) else []})


def _encode(vector: np.ndarray, fmt: str) -> np.ndarray | str:
    if fmt == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector


async def openai_embeddings(request: Request) -> Response:
    """OpenAI: an empty ``input`` is a 400, as OpenAI answers."""
    req = EmbedRequest.openai(await read_json(request))
    out = await service(request).embed(req)
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode(v, req.encoding_format)}
                for i, v in enumerate(out.vectors)
            ],
            "model": req.model.display,
            "usage": {"prompt_tokens": out.tokens, "total_tokens": out.tokens},
        }
    )


routes = [
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/embeddings", embeddings_legacy, methods=["POST"]),
    Route("/v1/embeddings", openai_embeddings, methods=["POST"]),
]
