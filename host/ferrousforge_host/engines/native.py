"""What the native engines share, apart from any one engine's library: the error a failed load raises
and how many threads an engine takes (so a runner hosting an ONNX or speech model never loads llama.cpp)."""

from __future__ import annotations

import os

from ferrousforge.errors import ForgeError


class ModelLoadError(ForgeError):
    status = 500


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_threads() -> int:
    cores = _cores()
    return cores if cores <= 4 else cores // 2  # physical cores on typical SMT machines


def threads_for(asked: int) -> int:
    """``num_thread`` as asked (0: the default), never more than the cores: more only contend."""
    return min(asked, _cores()) if asked else default_threads()
