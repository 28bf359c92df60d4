"""Bounded load on 127.0.0.1: 200 concurrent clients send a fixed number of small requests to a
real ``ferrousforge serve`` (gemma3:270m, 4 slots, queue limit ``--queue``). Reports what came back (only
200s and 503s are allowed), latency of the answered ones, throughput, and the server's memory
before, during and after.

    .venv/bin/python bench/load.py --requests 2000 --clients 200 --queue 64
    .venv/bin/python bench/load.py --requests 400 --clients 200 --queue 512
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from generate_speed import bench_store, start_forge, stop

BODY = {"model": "gemma3:270m", "prompt": "Say hi.", "stream": False, "options": {"num_predict": 8}}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def load(url: str, total: int, clients: int) -> tuple[collections.Counter[int], list[float], float]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    codes: collections.Counter[int] = collections.Counter()
    answered: list[float] = []
    gate = asyncio.Semaphore(clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as c:

        async def one() -> None:
            async with gate:
                start = time.perf_counter()
                r = await c.post("/api/generate", json=BODY)
                codes[r.status_code] += 1
                if r.status_code == 200:
                    answered.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        return codes, answered, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--queue", type=int, default=64, help="the server's max_queue")
    args = parser.parse_args()
    proc, url = start_forge(bench_store(), max_queue=args.queue, keep_alive="1h")
    try:
        asyncio.run(load(url, 8, 4))  # loaded and warm
        before = rss_mib(proc.pid)
        peak, done = before, threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.wait(0.05):
                peak = max(peak, rss_mib(proc.pid))

        threading.Thread(target=watch, daemon=True).start()
        codes, answered, wall = asyncio.run(load(url, args.requests, args.clients))
        done.set()
        asyncio.run(load(url, 8, 4))
        time.sleep(1)
        after = rss_mib(proc.pid)
        answered.sort()
        print(f"requests {args.requests} from {args.clients} clients in {wall:.1f} s: {dict(codes)}")
        p50, p99 = statistics.median(answered), answered[int(len(answered) * 0.99) - 1]
        print(f"answered/s {len(answered) / wall:.1f}; latency of answered p50 {p50:.2f} s p99 {p99:.2f} s")
        print(f"RSS MiB: before {before:.0f}, peak {peak:.0f}, after {after:.0f}")
        ok = set(codes) <= {200, 503} and httpx.get(url + "/api/version").status_code == 200
        print("only 200/503 and healthy after:", ok)
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
