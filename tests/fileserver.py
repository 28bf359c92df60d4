"""A real HTTP file server for pull tests: Range requests, a cut-off first download, and the few
Hugging Face Hub routes ``huggingface_hub`` uses (file tree, resolve with X-Linked-* headers)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FileServer:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.cut_after: int | None = None  # drop the connection after this many bytes, once
        self.trickle: float = 0.0  # seconds between 64 KiB chunks: a slow server, to interrupt mid-way
        self.requests: list[tuple[str, str, str | None]] = []
        self.url = ""

    def sha(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()


def _handler(fs: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _file(self) -> tuple[str, bytes] | None:
            path = self.path.split("?")[0].lstrip("/")
            m = re.match(r"^(.+?)/resolve/[^/]+/(.+)$", path)
            key = f"{m.group(1)}/{m.group(2)}" if m else path
            return (key, fs.files[key]) if key in fs.files else None

        def _empty(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_HEAD(self) -> None:
            fs.requests.append(("HEAD", self.path, self.headers.get("Range")))
            found = self._file()
            if not found:
                self._empty(404)
                return
            _, data = found
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("X-Repo-Commit", "0" * 40)
            self.end_headers()

        def do_GET(self) -> None:
            fs.requests.append(("GET", self.path, self.headers.get("Range")))
            tree = re.match(r"^/api/models/(.+?)/tree/[^/?]+", self.path)
            if tree:
                repo = tree.group(1)
                body = json.dumps(
                    [
                        {"type": "file", "path": k[len(repo) + 1 :], "size": len(v), "oid": "0" * 40}
                        for k, v in fs.files.items()
                        if k.startswith(repo + "/")
                    ]
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            found = self._file()
            if not found:
                self._empty(404)
                return
            _, data = found
            body = send_range(self, data)
            if body is None:
                self._empty(416)
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if fs.cut_after is not None:
                self.wfile.write(body[: fs.cut_after])
                self.wfile.flush()
                fs.cut_after = None
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fs.trickle:
                try:
                    for at in range(0, len(body), 1 << 16):
                        self.wfile.write(body[at : at + (1 << 16)])
                        self.wfile.flush()
                        time.sleep(fs.trickle)
                except (BrokenPipeError, ConnectionResetError):  # the client died mid-download
                    self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


def send_range(handler: BaseHTTPRequestHandler, data: bytes) -> bytes | None:
    """The status line for ``data``: 200, or 206 with its Content-Range for ``Range: bytes=N-``; the
    body to send, or None for a range past the end (the caller answers 416)."""
    start = 0
    if (rng := handler.headers.get("Range")) and (m := re.match(r"bytes=(\d+)-", rng)):
        start = int(m.group(1))
        if start >= len(data):
            return None
        handler.send_response(206)
        handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    else:
        handler.send_response(200)
    return data[start:]


@contextmanager
def running(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 in a thread of its own, for as long as the block runs: its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve_files(files: dict[str, bytes]) -> Iterator[FileServer]:
    fs = FileServer(files)
    with running(_handler(fs)) as fs.url:
        yield fs


def read(path: Path) -> bytes:
    return path.read_bytes()
