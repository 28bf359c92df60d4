"""Runner processes: each loaded native model runs in a process of its own, as Ollama's runners do.

A fault in an engine (a signal, an abort, the out-of-memory killer) ends that process only: its
requests end with "llama.cpp runner process has terminated: signal: illegal instruction", the server
and every other model keep serving, and the next request to the model loads it afresh.

The server side of a model is ``isolated(cls)``: a subclass of the engine's Mold whose primitives are
calls to the runner over a socket pair; the runner (``python -m ferrousforge_host.runner FD``) hosts the
real Mold. Messages are pickled tuples, so a streamed token costs one small message each way it goes:

    ("init", module, class, spec, options)  build the Mold (not loaded yet); no reply
    ("call", id, method, args)              one reply: ("ok", id, value) or ("err", id, error)
    ("stream", id, request)                 ("item", id, chunk)..., then ("end", id) or ("err", id, error)
    ("iter", id, method, args)              the same, for any other generator primitive (REMOTE_STREAMS)
    ("cancel", id)                          the client went away
    Closing the socket ends the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import itertools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from ferrousforge.errors import ForgeError
from ferrousforge.generation import GenerationChunk, GenerationInput, TextGenerationMold
from ferrousforge.mold import ModelSpec, Mold
from ferrousforge.options import Options
from ferrousforge_host import cores
from ferrousforge_host.logs import DEBUG_ENV, configure_logging

log = logging.getLogger("ferrousforge")

Reply = Callable[[str, Any], object]  # (kind, value): "item" | "end" | "ok" | "err"
# The engine primitives the server calls on a runner (besides load, unload and streaming)
REMOTE_CALLS = ("embed_sync", "score_sync", "count_tokens")
# The generator primitives the server streams from a runner (text generation has its own "stream")
REMOTE_STREAMS = ("transcribe_sync", "synthesize_sync")


def exit_cause(returncode: int | None) -> str:
    """How a runner ended, in Ollama's words: "signal: illegal instruction", "exit status 1"."""
    if returncode is None:
        return "connection lost"
    if returncode < 0:
        name = signal.strsignal(-returncode) or f"signal {-returncode}"
        return f"signal: {name.split(':')[0].lower()}"
    return f"exit status {returncode}"


def _error_tuple(exc: BaseException) -> tuple[str, str, str, int]:
    kind = type(exc)
    status = exc.status if isinstance(exc, ForgeError) else 500
    message = exc.message if isinstance(exc, ForgeError) else f"{kind.__name__}: {exc}"
    return kind.__module__, kind.__qualname__, message, status


def _rebuild_error(module: str, qualname: str, message: str, status: int) -> ForgeError:
    """The runner's error as the same ForgeError class where there is one (BadRequest stays a 400)."""
    try:
        cls = getattr(importlib.import_module(module), qualname)
    except (ImportError, AttributeError):
        cls = None
    if isinstance(cls, type) and issubclass(cls, ForgeError):
        err = cls.__new__(cls)
        ForgeError.__init__(err, message)
    else:
        err = ForgeError(message)
    err.status = status
    return err


class RunnerProcess:
    """The server's handle on one runner: sends requests, routes replies, notices its death."""

    def __init__(self, engine: str, cls: type[Mold], spec: ModelSpec, options: Options) -> None:
        self.engine = engine
        ours, theirs = socket.socketpair()
        shared = cores.busy()  # how many models generate now: each takes its share of the cores
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ferrousforge_host.runner", str(theirs.fileno())],
            pass_fds=(theirs.fileno(), shared.fd),
            stdin=subprocess.DEVNULL,
            env={**os.environ, cores.ENV: str(shared.fd)},
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self._send_lock = threading.Lock()
        self._waiting: dict[int, Reply] = {}
        self._ids = itertools.count(1)
        self.dead: ForgeError | None = None
        self.closing = False  # the server ended it (unload); any other end is logged as a fault
        self.name = spec.name
        self.send(("init", cls.__module__, cls.__qualname__, spec, options))
        self._reader = threading.Thread(target=self._read, name=f"runner-{spec.name}", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self.dead is None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.conn.send(message)

    def _read(self) -> None:
        try:
            while True:
                kind, rid, *rest = self.conn.recv()
                value = _rebuild_error(*rest[0]) if kind == "err" else (rest[0] if rest else None)
                done = kind in ("end", "ok", "err")
                reply = self._waiting.pop(rid, None) if done else self._waiting.get(rid)
                if reply is not None:
                    reply(kind, value)
        except (EOFError, OSError):
            pass
        try:
            returncode = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            returncode = None
        self.dead = ForgeError(f"{self.engine} runner process has terminated: {exit_cause(returncode)}")
        if not self.closing:
            log.warning("%s: its runner (pid %d) ended: %s", self.name, self.proc.pid, exit_cause(returncode))
        for reply in list(self._waiting.values()):
            reply("err", ForgeError(self.dead.message))  # one exception each: each is raised on its own
        self._waiting.clear()

    def request(self, message: tuple[Any, ...], reply: Reply) -> int:
        """Send a call or stream with a fresh id; replies go to ``reply`` (from the reader thread)."""
        if self.dead is not None:
            raise self.dead
        rid = next(self._ids)
        self._waiting[rid] = reply
        try:
            self.send((message[0], rid, *message[1:]))
        except OSError:  # it is dying: its reader is about to learn how, and says so
            self._waiting.pop(rid, None)
            self._reader.join(timeout=10)
            raise self.dead or ForgeError(f"{self.engine} runner process is gone") from None
        if self.dead is not None and self._waiting.pop(rid, None) is not None:
            raise self.dead  # it died between the check above and registering the reply
        return rid

    def call(self, method: str, *args: Any) -> Any:
        done = threading.Event()
        result: list[tuple[str, Any]] = []

        def reply(kind: str, value: Any) -> None:
            result.append((kind, value))
            done.set()

        self.request(("call", method, args), reply)
        done.wait()
        kind, value = result[0]
        if kind == "err":
            raise value
        return value

    def cancel(self, rid: int) -> None:
        if self._waiting.pop(rid, None) is not None and self.dead is None:
            with contextlib.suppress(OSError):
                self.send(("cancel", rid))

    def close(self) -> None:
        """Ask the runner to end (shutting its socket down: the reader wakes too), then make sure it has."""
        self.closing = True
        with contextlib.suppress(OSError), socket.socket(fileno=os.dup(self.conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        self.conn.close()


def _chunk(kind: str, value: Any) -> GenerationChunk | None:
    """A stream's next reply: a chunk, None at its end, or its error raised."""
    if kind == "err":
        raise value
    return None if kind == "end" else value


@functools.cache
def isolated(cls: type[Mold]) -> type[Mold]:
    """A subclass of the engine's Mold whose primitives run in a runner process."""

    class Isolated(cls):  # type: ignore[valid-type,misc]
        runner: RunnerProcess | None = None
        _facts: tuple[dict[str, Any], int] = ({}, 0)

        def load_sync(self) -> None:
            self.runner = RunnerProcess(cls.engine, cls, self.spec, self.options)
            try:
                self.runner.call("load_sync")
                self._facts = self.runner.call("facts")
            except BaseException:
                self.runner.close()
                self.runner = None
                raise

        def abort(self) -> bool:
            if self.runner is None:  # not started yet: it starts and is killed by the next try
                return False
            self.runner.proc.kill()  # its load's call ends with the runner
            return True

        def unload_sync(self) -> None:
            runner, self.runner = self.runner, None
            if runner is None:
                return
            if runner.dead is None:
                with contextlib.suppress(ForgeError):  # it died on the way out: nothing left to free
                    runner.call("unload_sync")
            runner.close()

        def is_loaded(self) -> bool:
            return self.runner is not None and self.runner.alive

        def metadata(self) -> dict[str, Any]:
            return {**self._facts[0], "runner_pid": self.runner.pid} if self.runner else cls.metadata(self)

        def memory_bytes(self) -> int:
            return self._facts[1] if self.is_loaded() else 0

        def _remote(self) -> RunnerProcess:
            if self.runner is None:
                raise ForgeError(f"model '{self.spec.name}' is not loaded")
            return self.runner

        def stream_sync(self, request: GenerationInput) -> Iterator[GenerationChunk]:
            out: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
            runner = self._remote()
            rid = runner.request(("stream", request), lambda kind, value: out.put((kind, value)))
            try:
                with cores.busy().generating(runner):
                    while (chunk := _chunk(*out.get())) is not None:
                        yield chunk
            finally:
                runner.cancel(rid)

        async def stream(self, request: GenerationInput) -> AsyncIterator[GenerationChunk]:
            loop = asyncio.get_running_loop()
            out: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
            runner = self._remote()
            rid = runner.request(
                ("stream", request),
                lambda kind, value: loop.call_soon_threadsafe(out.put_nowait, (kind, value)),
            )
            try:
                with cores.busy().generating(runner):
                    while (chunk := _chunk(*await out.get())) is not None:
                        yield chunk
            finally:
                runner.cancel(rid)  # a client that went away frees its slot in the runner

        async def run_in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
            """A remote primitive is asked of the runner from the event loop, and its reply wakes the
            loop: no hand-off to the Mold's worker thread and back (the runner keeps calls in order)."""
            method = getattr(fn, "remote_method", None)
            if method is None:
                return await super().run_in_worker(fn, *args)
            loop = asyncio.get_running_loop()
            done: asyncio.Future[Any] = loop.create_future()

            def settle(kind: str, value: Any) -> None:
                if not done.done():  # (the caller may have been cancelled)
                    done.set_exception(value) if kind == "err" else done.set_result(value)

            self._remote().request(
                ("call", method, args), lambda kind, value: loop.call_soon_threadsafe(settle, kind, value)
            )
            return await done

    def remote(method: str) -> Callable[..., Any]:
        def call(self: Any, *args: Any) -> Any:
            return self._remote().call(method, *args)

        call.__name__ = method
        call.remote_method = method  # type: ignore[attr-defined]
        return call

    def remote_stream(method: str) -> Callable[..., Iterator[Any]]:
        def stream(self: Any, *args: Any) -> Iterator[Any]:
            out: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
            runner = self._remote()
            rid = runner.request(("iter", method, args), lambda kind, value: out.put((kind, value)))
            try:
                while (item := _chunk(*out.get())) is not None:
                    yield item
            finally:
                runner.cancel(rid)

        stream.__name__ = method
        return stream

    for method in REMOTE_CALLS:
        if hasattr(cls, method):
            setattr(Isolated, method, remote(method))
    for method in REMOTE_STREAMS:
        if hasattr(cls, method):
            setattr(Isolated, method, remote_stream(method))
    if not issubclass(cls, TextGenerationMold):
        del Isolated.stream, Isolated.stream_sync
    Isolated.__name__ = Isolated.__qualname__ = f"Isolated{cls.__name__}"
    return Isolated


# -- the runner's side ----------------------------------------------------------------------------
class _Runner:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.calls = ThreadPoolExecutor(1, thread_name_prefix="calls")  # in order, as the Mold's worker
        self.cancels: dict[int, Callable[[], None]] = {}
        self.mold: Mold | None = None

    def send(self, message: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.send(message)

    def serve(self) -> None:
        _, module, qualname, spec, options = self.conn.recv()
        cls = getattr(importlib.import_module(module), qualname)
        self.mold = cls(spec, options)
        while True:
            try:
                kind, rid, *rest = self.conn.recv()
            except (EOFError, OSError):
                return
            if kind == "call":
                self.calls.submit(self.call, rid, *rest)
            elif kind == "stream":
                self.start_stream(rid, rest[0])
            elif kind == "iter":
                method, args = rest
                self.start_thread(rid, functools.partial(getattr(self.mold, method), *args))
            elif kind == "cancel" and rid in self.cancels:
                self.cancels.pop(rid)()

    def call(self, rid: int, method: str, args: tuple[Any, ...]) -> None:
        mold = self.mold
        assert mold is not None
        try:
            if method == "facts":
                value: Any = (mold.metadata(), mold.memory_bytes())
            else:
                value = getattr(mold, method)(*args)
        except BaseException as exc:
            self.send(("err", rid, _error_tuple(exc)))
        else:
            self.send(("ok", rid, value))

    def start_stream(self, rid: int, request: GenerationInput) -> None:
        """An engine that streams to a callback (``start``) sends from its own decode thread, so chunks
        of different requests leave in the order they were made; others get a thread per stream."""
        mold = self.mold
        assert isinstance(mold, TextGenerationMold)
        start = getattr(mold, "start", None)
        if start is None:
            self.start_thread(rid, lambda: mold.stream_sync(request))
            return

        def emit(item: GenerationChunk | BaseException) -> None:
            if isinstance(item, BaseException):
                self.cancels.pop(rid, None)
                self.send(("err", rid, _error_tuple(item)))
                return
            self.send(("item", rid, item))
            if item.done:
                self.cancels.pop(rid, None)
                self.send(("end", rid))

        try:
            self.cancels[rid] = start(request, emit)
        except BaseException as exc:
            self.send(("err", rid, _error_tuple(exc)))

    def start_thread(self, rid: int, produce: Callable[[], Iterator[Any]]) -> None:
        """Send what a generator yields, from a thread of its own; a cancel stops it at its next item."""
        cancelled = threading.Event()
        self.cancels[rid] = cancelled.set
        threading.Thread(target=self.stream, args=(rid, produce, cancelled), daemon=True).start()

    def stream(self, rid: int, produce: Callable[[], Iterator[Any]], cancelled: threading.Event) -> None:
        try:
            for chunk in produce():
                self.send(("item", rid, chunk))
                if cancelled.is_set():
                    break
        except BaseException as exc:
            self.send(("err", rid, _error_tuple(exc)))
        else:
            self.send(("end", rid))
        finally:
            self.cancels.pop(rid, None)


def main() -> None:
    conn = Connection(int(sys.argv[1]))
    if DEBUG_ENV in os.environ:  # started by ferrousforge serve: log as it does
        configure_logging(os.environ[DEBUG_ENV] not in ("", "0"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server, which ends its runners
    threading.Thread(target=_exit_with_server, args=(os.getppid(),), daemon=True).start()
    _Runner(conn).serve()


def _exit_with_server(server: int) -> None:
    """End this runner when its server is gone, even while a long call keeps the socket unread."""
    while os.getppid() == server:
        time.sleep(1.0)
    os._exit(1)


if __name__ == "__main__":
    main()
