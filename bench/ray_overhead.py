"""What the Ray Serve path costs against the plain host, on one machine.

    .venv/bin/python bench/ray_overhead.py [--runs 6]

1. Per request, alternating runs against ``ferrousforge serve`` and ``ferrousforge serve --ray`` (one
   model replica, the same store folder: nothing copied): generation on gemma3:270m (greedy, 128
   tokens, streamed: time to first token and tokens/s) and embeddings on all-minilm (one sentence per
   request: latency; 32 per request: sentences/s). Medians; the ratio is Ray / plain.
2. Aggregate throughput of a two-model mix (gemma3:270m and smollm2:135m, 4 clients, 2 per model,
   32 tokens each) through the Ray path with 1 and with 2 model replicas.

Models come from the bench store (FERROUSFORGE_BENCH_STORE, default /tmp/ff-bench-store), pulled
there on first use as bench/generate_speed.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from generate_speed import TEXT, bench_store, free_port, start_forge, stop, wait_up

THREADS = 2
CLIENT = httpx.Client(timeout=300)
SENTENCE = "local models keep private data on the machine that runs them while still answering quickly."


def start_ray(store: Path, replicas: int, threads: int = THREADS) -> tuple[subprocess.Popen[bytes], str]:
    """``ferrousforge serve --ray``: a local Ray, the ingress and ``replicas`` model replicas."""
    port = free_port()
    env = {
        **os.environ,
        "FERROUSFORGE_MODELS": str(store),
        "FERROUSFORGE_NUM_THREAD": str(threads),
        "FERROUSFORGE_RAY_NUM_REPLICAS": str(replicas),
        "FERROUSFORGE_RAY_REPLICA_CPUS": "0.5",  # logical: two replicas and the ingress on 2 CPUs
    }
    command = [
        str(Path(sys.executable).parent / "ferrousforge"),
        "serve",
        "--host",
        f"127.0.0.1:{port}",
        "--ray",
    ]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_up(url + "/api/version", proc, timeout=300)
    deadline = time.time() + 120
    while len(CLIENT.get(url + "/api/cluster").json()["replicas"]) < replicas:
        if time.time() > deadline:
            raise RuntimeError("replicas did not come up")
        time.sleep(0.5)
    return proc, url


def generate(url: str, model: str, text: str, tokens: int) -> tuple[float, float, int]:
    """(time to first token, tokens/s after it, tokens) for one streamed greedy request."""
    body = {
        "model": model,
        "prompt": text,
        "stream": True,
        "options": {"num_predict": tokens, "temperature": 0, "seed": 1},
    }
    start = time.perf_counter()
    first = last = 0.0
    n = 0
    with CLIENT.stream("POST", url + "/api/generate", json=body) as r:
        for line in r.iter_lines():
            chunk = json.loads(line)
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if chunk["done"]:
                break
            now = time.perf_counter()
            first = first or now
            last = now
            n += 1
    return first - start, (n - 1) / (last - first) if n > 1 else 0.0, n


def embed(url: str, inputs: list[str]) -> float:
    start = time.perf_counter()
    r = CLIENT.post(url + "/api/embed", json={"model": "all-minilm", "input": inputs})
    r.raise_for_status()
    return time.perf_counter() - start


def per_request(urls: dict[str, str], runs: int) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {k: {} for k in urls}
    for url in urls.values():  # warm: models loaded, caches primed
        generate(url, "gemma3:270m", "hello", 8)
        embed(url, [SENTENCE])
    for i in range(runs):
        for key, url in urls.items() if i % 2 == 0 else reversed(urls.items()):
            ttft, tps, _ = generate(url, "gemma3:270m", f"Essay {i} {os.urandom(3).hex()}. {TEXT}", 128)
            one = statistics.median(embed(url, [SENTENCE]) for _ in range(20))
            batch = embed(url, [f"{SENTENCE} {j}" for j in range(32)])
            for name, value in (("ttft", ttft), ("tok/s", tps), ("embed1", one), ("embed32/s", 32 / batch)):
                results[key].setdefault(name, []).append(value)
    return results


def mix(url: str, requests: int = 8) -> float:
    """Tokens/s over ``requests`` 32-token requests, two models, four clients at once."""
    models = ["gemma3:270m", "smollm2:135m"]
    for m in models:
        generate(url, m, "hello", 4)
    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        jobs = [
            pool.submit(generate, url, models[i % 2], f"Story {i}: {TEXT[:300]}", 32) for i in range(requests)
        ]
        tokens = sum(j.result()[2] for j in jobs)
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--no-mix", action="store_true", help="only the per-request part")
    args = parser.parse_args()
    store = bench_store()
    plain, plain_url = start_forge(store, pull="gemma3:270m")
    try:
        for model in ("all-minilm", "smollm2:135m"):
            CLIENT.post(plain_url + "/api/pull", json={"model": model, "stream": False}).raise_for_status()
        ray_proc, ray_url = start_ray(store, 1)
        try:
            results = per_request({"plain": plain_url, "ray": ray_url}, args.runs)
        finally:
            stop(ray_proc)
        plain_mix = 0.0 if args.no_mix else mix(plain_url)
    finally:
        stop(plain)
    print(f"per request, medians of {args.runs} runs (ray / plain):")
    for name in ("ttft", "tok/s", "embed1", "embed32/s"):
        p, r = statistics.median(results["plain"][name]), statistics.median(results["ray"][name])
        unit = "ms" if name in ("ttft", "embed1") else ""
        scale = 1000 if unit else 1
        print(f"  {name:10s} plain {p * scale:8.1f}{unit}  ray {r * scale:8.1f}{unit}  ratio {r / p:.3f}")
    if args.no_mix:
        return
    print(f"two-model mix, tokens/s: plain host {plain_mix:.1f}")
    for replicas in (1, 2):  # the same two threads in all: one replica's, or each of two replicas' one
        proc, url = start_ray(store, replicas, threads=THREADS // replicas)
        try:
            print(f"  ray, {replicas} replica(s): {mix(url):.1f}")
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
