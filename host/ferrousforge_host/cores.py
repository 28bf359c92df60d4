"""The CPU cores, shared by the models that generate at once.

llama.cpp's CPU threads wait for one another at every operation of every token (OpenMP barriers that
spin). Two models each running on every core at once take turns at each barrier and both crawl: on
two cores, two models at 2 threads each made 2.6 tokens/s together where one alone makes 60. So the
host counts the models that are generating, in a page of shared memory that each runner process maps
(its descriptor is inherited, named by ``FERROUSFORGE_BUSY_FD``), and before each step a model takes
its share of the threads it was given: ``num_thread / busy``, at least one.

Only the host writes the count (under a lock); runners read it once per step.
``FERROUSFORGE_SHARE_CORES=0`` turns the sharing off (every model keeps all its threads).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import struct
import tempfile
import threading
from collections.abc import Iterator

ENV = "FERROUSFORGE_BUSY_FD"
_COUNT = struct.Struct("<q")
SHARE = os.environ.get("FERROUSFORGE_SHARE_CORES", "1") != "0"


class Busy:
    """How many models are generating now, in memory shared with the runners."""

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            fd = _anonymous_file()
            os.ftruncate(fd, _COUNT.size)
        self.fd = fd
        self._map = mmap.mmap(fd, _COUNT.size)
        self._lock = threading.Lock()
        self._streams: dict[object, int] = {}  # (host side) model → its requests generating now

    def count(self) -> int:
        return int(_COUNT.unpack_from(self._map)[0])

    @contextlib.contextmanager
    def generating(self, model: object) -> Iterator[None]:
        """The host's side: ``model`` counts as busy while any request to it generates."""
        self._add(model, 1)
        try:
            yield
        finally:
            self._add(model, -1)

    def _add(self, model: object, n: int) -> None:
        with self._lock:
            streams = self._streams.get(model, 0) + n
            if streams > 0:
                self._streams[model] = streams
            else:
                self._streams.pop(model, None)
            _COUNT.pack_into(self._map, 0, len(self._streams))

    def share(self, threads: int) -> int:
        """A model's share of its ``threads`` while the others generate too."""
        if not SHARE:
            return threads
        return max(1, threads // max(1, self.count()))


def _anonymous_file() -> int:
    """A file only open descriptors reach (inherited only where passed on)."""
    if hasattr(os, "memfd_create"):  # Linux
        return os.memfd_create("ferrousforge-busy", 0)
    fd, path = tempfile.mkstemp(prefix="ferrousforge-busy-")  # macOS and the other POSIX systems
    os.unlink(path)
    return fd


_busy: Busy | None = None
_busy_lock = threading.Lock()


def busy() -> Busy:
    """This process's counter: the host's own, or in a runner the host's (from ``FERROUSFORGE_BUSY_FD``)."""
    global _busy
    with _busy_lock:
        if _busy is None:
            inherited = os.environ.get(ENV)
            _busy = Busy(int(inherited) if inherited else None)
        return _busy
