"""What the host is doing: Prometheus metrics at /metrics, a request id on every response, and one
structured log line per request."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response

from ferrousforge_host.guard import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("ferrousforge.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Metrics:
    def __init__(self, scheduler: Any) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "ferrousforge_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "ferrousforge_request_seconds", "HTTP request time to the last byte", ["route"], registry=r
        )
        self.tokens = Counter("ferrousforge_tokens", "Tokens processed", ["model", "kind"], registry=r)
        Gauge(
            "ferrousforge_requests_in_flight", "Requests admitted and not finished", registry=r
        ).set_function(lambda: scheduler.in_flight)
        Gauge("ferrousforge_models_loaded", "Models loaded", registry=r).set_function(
            lambda: len(scheduler.loaded())
        )
        Gauge(
            "ferrousforge_model_memory_bytes", "Estimated memory of the loaded models", registry=r
        ).set_function(scheduler.held_bytes)

    def count_tokens(self, model: str, prompt: int, generated: int) -> None:
        self.tokens.labels(model, "prompt").inc(prompt)
        self.tokens.labels(model, "generated").inc(generated)


async def metrics_endpoint(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class Observe:
    """ASGI middleware: request id, metrics and the access log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if scope.get("client_gone"):
                status = 499  # the client closed the connection before the answer was complete
            route = getattr(scope.get("route"), "path", "unmatched")
            seconds = time.perf_counter() - started
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(seconds)
            log.info(
                json.dumps(
                    {
                        "id": request_id,
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round(seconds * 1000, 1),
                    }
                )
            )
