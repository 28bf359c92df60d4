"""One HTTP request carried between Ray actors: the replica runs it through the host's own ASGI app
and hands back a head (status, headers) followed by the body's chunks as they are sent, so that
NDJSON and SSE streams pass through unchanged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from ferrousforge_host.guard import ASGIApp, Message

Headers = list[tuple[bytes, bytes]]


@dataclass
class Call:
    """What a replica needs of a request: no sockets, so it pickles."""

    method: str
    path: str
    query: bytes = b""
    headers: Headers = field(default_factory=list)
    body: bytes = b""


@dataclass
class Head:
    status: int
    headers: Headers


async def run_asgi(app: ASGIApp, call: Call) -> AsyncGenerator[Head | bytes, None]:
    """Yield the response's head, then each non-empty body chunk. Closing the iterator early (the
    client went away) tells the app the client disconnected and cancels it."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": call.method,
        "scheme": "http",
        "path": call.path,
        "raw_path": call.path.encode(),
        "query_string": call.query,
        "root_path": "",
        "headers": call.headers,
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
        "state": {},
    }
    sent: asyncio.Queue[Message | None] = asyncio.Queue()
    gone = asyncio.Event()
    body_read = False

    async def receive() -> Message:
        nonlocal body_read
        if not body_read:
            body_read = True
            return {"type": "http.request", "body": call.body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        await sent.put(message)

    task = asyncio.ensure_future(app(scope, receive, send))
    task.add_done_callback(lambda _: sent.put_nowait(None))
    started = False
    try:
        while (message := await sent.get()) is not None:
            if message["type"] == "http.response.start":
                started = True
                yield Head(message["status"], list(message.get("headers", [])))
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    yield bytes(message["body"])
                if not message.get("more_body", False):
                    break
        if not started:
            await task  # the app ended without answering: its error is raised here
    finally:
        gone.set()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
