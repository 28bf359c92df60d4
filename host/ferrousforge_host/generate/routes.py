"""Routes: parse, call the generation service, answer JSON or a stream."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferrousforge.protocol.generate import ChatRequest, GenerateRequest
from ferrousforge_host.generate.serving import merge_chat, merge_generate
from ferrousforge_host.http import read_json, respond


async def generate(request: Request) -> Response:
    req = GenerateRequest.parse(await read_json(request))
    return await respond(request.app.state.generation.generate(req), req.stream, merge_generate)


async def chat(request: Request) -> Response:
    req = ChatRequest.parse(await read_json(request))
    return await respond(request.app.state.generation.chat(req), req.stream, merge_chat)


routes = [
    Route("/api/generate", generate, methods=["POST"]),
    Route("/api/chat", chat, methods=["POST"]),
]
