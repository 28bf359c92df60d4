"""``GET /openapi.json``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ferrousforge_host.http import JSONResponse
from ferrousforge_host.openapi.document import document


async def openapi(request: Request) -> Response:
    return JSONResponse(document())


routes = [Route("/openapi.json", openapi, methods=["GET"])]
