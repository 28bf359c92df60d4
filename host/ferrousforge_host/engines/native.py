"""What the native engines share, apart from any one engine's library: the error a failed load raises
and how many threads an engine takes (so a runner hosting an ONNX or speech model never loads llama.cpp)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ferrousforge.errors import ForgeError

T = TypeVar("T")


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


def on_a_passing_thread(work: Callable[..., T], *args: Any) -> T:
    """``work(*args)`` on a thread that ends with it. llama.cpp's CPU backend runs on OpenMP, whose
    team of threads lives as long as the thread that started it; a model load that computes (AMX
    CPUs repack the weights in parallel) left a team on the loading thread, libgomp then counted more
    threads than cores and stopped spinning at its barriers, and the engine's decode thread ran at
    half speed (gemma3:270m on an AMX Xeon: 34 instead of 63 tokens/s, bench/build_flavours.py)."""
    with ThreadPoolExecutor(1, thread_name_prefix="native-load") as one:
        return one.submit(work, *args).result()
