"""llama.cpp's log, as the server keeps it: warnings and errors to stderr (the runner's, which is the
server's), debug and info only with OLLAMA_DEBUG, and the error lines since a load began kept for the
load's message ("llama.cpp rejected it" says nothing; its log says why).

llama-cpp-python's own callback reads ggml's log levels in their old order and so drops errors.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

import llama_cpp as L

WARN, ERROR, CONT = 3, 4, 5  # ggml_log_level
errors: list[str] = []  # the error lines since the last ``clear()`` (loads are one at a time)
_last = 0


def _log(level: int, text: bytes | None, user_data: Any) -> None:
    global _last
    level = _last if level == CONT else level
    _last = level
    if not text:
        return
    line = text.decode(errors="replace")
    if level == ERROR and line.strip():
        errors.append(line.strip())
    if level >= WARN or os.environ.get("FERROUSFORGE_DEBUG", "0") not in ("", "0"):
        print(line, end="", file=sys.stderr, flush=True)


callback = L.llama_log_callback(_log)  # kept alive: llama.cpp and libmtmd call it
L.llama_log_set(callback, ctypes.c_void_p(0))


def clear() -> None:
    errors.clear()


def reason(default: str) -> str:
    """The first error llama.cpp logged since ``clear()`` (the cause; later lines say what it ended),
    without the function's name, else ``default``."""
    if not errors:
        return default
    return errors[0].split(": error loading model: ", 1)[-1]
