"""One HTTP request carried between Ray actors: the replica runs it through the host's own ASGI app
and hands back a head (status, headers and the body's first part) followed by the body's later parts
as they are sent, so that NDJSON and SSE streams pass through unchanged. Every item is a message
between processes, so parts sent close together travel as one: a whole JSON answer is one item, and
a stream of tokens goes out at most every ``interval`` seconds (its first and last parts at once)."""

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
    body: bytes = b""  # the body's first part
    done: bool = False  # the body ends with it: nothing follows


async def run_asgi(app: ASGIApp, call: Call, interval: float = 0.0) -> AsyncGenerator[Head | bytes, None]:
    """Yield the response's head with the body's first part, then the rest of the body, parts sent
    within ``interval`` seconds of the previous item joined into one. Closing the iterator early (the
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

    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(app(scope, receive, send))
    task.add_done_callback(lambda _: sent.put_nowait(None))
    head: Head | None = None
    head_sent = False
    pending = bytearray()
    last = 0.0  # when the last item left
    try:
        while True:
            wait = max(0.0, last + interval - loop.time()) if pending else None
            try:
                message = await asyncio.wait_for(sent.get(), wait)
            except TimeoutError:  # the interval is over: what came meanwhile goes out together
                yield bytes(pending)
                pending.clear()
                last = loop.time()
                continue
            if message is None:  # the app ended without finishing its answer
                break
            if message["type"] == "http.response.start":
                head = Head(message["status"], list(message.get("headers", [])))
            elif message["type"] == "http.response.body" and head is not None:
                pending += message.get("body", b"")
                more = message.get("more_body", False)
                if not head_sent or not more or loop.time() - last >= interval:
                    if not head_sent:  # the first part goes with the head
                        head.body, head.done = bytes(pending), not more
                        yield head
                    elif pending:
                        yield bytes(pending)
                    head_sent = True
                    pending.clear()
                    last = loop.time()
                if not more:
                    break
        if head is None:
            await task  # the app ended without answering: its error is raised here
        elif not head_sent:
            yield head
        elif pending:
            yield bytes(pending)
    finally:
        gone.set()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
