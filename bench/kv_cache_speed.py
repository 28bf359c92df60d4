"""A quantized KV cache (``kv_cache_type``, Ollama's OLLAMA_KV_CACHE_TYPE) against llama-server with the
same cache (``-ctk/-ctv``): memory and speed of a long prompt, for f16, q8_0 and q4_0.

    .venv/bin/python bench/kv_cache_speed.py [--runs 4]

gemma3:270m (heads of 256 values), the same blob in both servers, 4 sequences of 4096 tokens
(FerrousForge's defaults; llama-server ``-np 4 -c 16384``), flash attention on in llama-server (a
quantized V cache needs it; FerrousForge's ``auto`` turns it on), 2 threads. Each run: a prompt of
about 2000 tokens with a unique prefix (nothing reused), 64 greedy tokens streamed; the servers
alternate. Memory: the resident set of the process holding the model (FerrousForge's runner,
llama-server) once loaded and after the runs, and FerrousForge's own estimate (``/api/ps`` size).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from generate_speed import (
    CLIENT,
    CLOSE,
    TEXT,
    THREADS,
    bench_store,
    completed,
    gemma,
    generated,
    measure,
    start_forge,
    start_llama_server,
    stop,
)

NEW_TOKENS = 64
CTX, SLOTS = 4096, 4


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024


def long_prompt(i: int) -> str:
    return f"Essay {i:03d} {os.urandom(4).hex()}. " + " ".join([TEXT] * 8)


def forge_pieces(url: str, text: str) -> Iterator[str]:
    options = {"num_predict": NEW_TOKENS, "temperature": 0, "repeat_penalty": 1.0}
    return generated(url, {"model": "gemma3:270m", "prompt": text, "stream": True, "options": options}, 600)


def server_pieces(url: str, text: str) -> Iterator[str]:
    body = {"prompt": gemma(text), "stream": True, "n_predict": NEW_TOKENS, "cache_prompt": False}
    body |= {"temperature": 0, "repeat_penalty": 1.0}
    return completed(url, body, CLOSE, 600)


def one_type(store: Path, kind: str, runs: int) -> dict[str, dict[str, float]]:
    forge, forge_url = start_forge(store, extra_env={"FERROUSFORGE_KV_CACHE_TYPE": kind})
    procs = [forge]
    try:
        server, server_url = start_llama_server(store, SLOTS, ("-ctk", kind, "-ctv", kind, "-fa", "on"))
        procs.append(server)
        sides = {"FerrousForge": (forge_pieces, forge_url), "llama-server": (server_pieces, server_url)}
        for fn, url in sides.values():  # load and warm
            measure(fn(url, long_prompt(999)))
        (info,) = CLIENT.get(forge_url + "/api/info").json()["models"]
        assert info.get("kv_cache_type", "f16") == kind, info
        pids = {"FerrousForge": int(info["runner_pid"]), "llama-server": server.pid}
        results: dict[str, list[tuple[float, float, int]]] = {k: [] for k in sides}
        for run in range(runs):
            order = list(sides) if run % 2 == 0 else list(sides)[::-1]
            for name in order:
                fn, url = sides[name]
                results[name].append(measure(fn(url, long_prompt(run))))
        size = CLIENT.get(forge_url + "/api/ps").json()["models"][0]["size"]
        out = {}
        for name, rows in results.items():
            out[name] = {
                "ttft": statistics.median(r[0] for r in rows),
                "tps": statistics.median(r[1] for r in rows),
                "rss": rss_mib(pids[name]),
            }
        out["FerrousForge"]["estimate"] = size / 2**20
        return out
    finally:
        stop(*procs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--types", default="f16,q8_0,q4_0")
    args = parser.parse_args()
    store = bench_store()
    print(
        f"gemma3:270m, {SLOTS} x {CTX} tokens of cache, prompt ~2000 tokens, {NEW_TOKENS} greedy tokens, "
        f"{THREADS} threads, medians of {args.runs} alternating runs\n"
    )
    print(
        "| cache | side | resident MiB | estimate MiB | first token | tokens/s | TTFT vs llama-server "
        "| tokens/s vs llama-server |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind in args.types.split(","):
        res = one_type(store, kind, args.runs)
        ref = res["llama-server"]
        for name, r in res.items():
            estimate = f"{r['estimate']:.0f}" if "estimate" in r else ""
            print(
                f"| {kind} | {name} | {r['rss']:.0f} | {estimate} | {r['ttft'] * 1000:.0f} ms "
                f"| {r['tps']:.1f} | {r['ttft'] / ref['ttft']:.2f}x | {r['tps'] / ref['tps']:.2f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
