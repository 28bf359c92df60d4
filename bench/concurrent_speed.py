"""Concurrent generation: aggregate tokens/s of 1, 2 and 4 simultaneous streams on gemma3:270m,
FerrousForge (4 slots) against llama.cpp's llama-server -np 4 in the same run; then time to first
token under a bounded load of 64 clients on 127.0.0.1.

    .venv/bin/python bench/concurrent_speed.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from generate_speed import (
    NEW_TOKENS,
    TEXT,
    THREADS,
    bench_store,
    forge_pieces,
    server_pieces,
    start_forge,
    start_llama_server,
    stop,
)

SLOTS = 4


def aggregate(fn, url: str, streams: int) -> float:  # type: ignore[no-untyped-def]
    """Total streamed tokens / wall time, for ``streams`` requests sent at once."""

    def one(k: int) -> int:
        return sum(1 for _ in fn(url, f"Essay {k} {os.urandom(3).hex()}. {TEXT}"))

    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        tokens = sum(pool.map(one, range(streams)))
    return tokens / (time.perf_counter() - start)


def ttft_under_load(fn, url: str, clients: int = 64) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """p50 and p99 time to first token (s), and the load's wall time, for 64 clients at once."""

    def one(k: int) -> float:
        start = time.perf_counter()
        for _ in fn(url, f"Question {k} {os.urandom(3).hex()}: what is a computer?"):
            return time.perf_counter() - start
        return time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        firsts = sorted(pool.map(one, range(clients)))
    wall = time.perf_counter() - start
    return statistics.median(firsts), firsts[min(len(firsts) - 1, int(len(firsts) * 0.99))], wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    store = bench_store()
    forge, forge_url = start_forge(store, num_parallel=SLOTS, max_queue=512)
    inproc, inproc_url = start_forge(store, None, num_parallel=SLOTS, max_queue=512, runners=0)
    procs = [forge, inproc]
    try:
        server, server_url = start_llama_server(store, slots=SLOTS)
        procs.append(server)
        targets = {
            "FerrousForge": (forge_pieces, forge_url),
            "FerrousForge, in-process engine": (forge_pieces, inproc_url),
            "llama-server -np 4": (server_pieces, server_url),
        }
        for fn, url in targets.values():
            aggregate(fn, url, 2)  # warm
        results: dict[tuple[str, int], list[float]] = {}
        for r in range(args.rounds):
            for streams in (1, 2, 4):
                names = list(targets) if r % 2 == 0 else list(reversed(targets))
                for name in names:
                    fn, url = targets[name]
                    results.setdefault((name, streams), []).append(aggregate(fn, url, streams))
        print(
            f"gemma3:270m, {NEW_TOKENS} greedy tokens per stream, 234-token prompts, {THREADS} threads, "
            f"{SLOTS} slots, median of {args.rounds} rounds\n"
        )
        print(
            "| streams | FerrousForge tok/s | in-process engine tok/s | llama-server tok/s | ratio "
            "| runners vs in-process | FerrousForge vs its 1 stream |"
        )
        print("|---|---|---|---|---|---|---|")
        one = statistics.median(results[("FerrousForge", 1)])
        for streams in (1, 2, 4):
            ours = statistics.median(results[("FerrousForge", streams)])
            inside = statistics.median(results[("FerrousForge, in-process engine", streams)])
            theirs = statistics.median(results[("llama-server -np 4", streams)])
            print(
                f"| {streams} | {ours:.1f} | {inside:.1f} | {theirs:.1f} | {ours / theirs:.2f}x "
                f"| {ours / inside:.2f}x | {ours / one:.2f}x |"
            )
        print("\n64 clients at once (one short request each, 128 tokens):\n")
        print("| server | TTFT p50 | TTFT p99 | wall |")
        print("|---|---|---|---|")
        for name, (fn, url) in targets.items():
            p50, p99, wall = ttft_under_load(fn, url)
            print(f"| {name} | {p50:.2f} s | {p99:.2f} s | {wall:.1f} s |")
        errors = httpx.get(forge_url + "/api/ps").status_code
        assert errors == 200
    finally:
        stop(*procs)


if __name__ == "__main__":
    main()
