"""Structured output: decode tok/s of gemma3:270m with a JSON grammar (`/api/generate` with
``format: "json"``) and without, against llama-server's ``/completion`` with and without
``json_schema: {}`` (any JSON value) on the same blob, alternating, greedy, one request at a time.

    .venv/bin/python bench/structured_speed.py [--runs 3] [--tokens 64]

Gemma's vocabulary has 262,144 tokens: a grammar applied to every token before each pick costs more
than the model's step; llama-server checks the chain's pick first and applies the grammar to all only
when it refuses it, as FerrousForge's llama.cpp engine does.
"""

from __future__ import annotations

import argparse
import statistics

from generate_speed import CLIENT, THREADS, bench_store, start_forge, start_llama_server, stop

PROMPT = "A JSON object describing a cat, with its name, age and favourite food:"


def forge(url: str, tokens: int, structured: bool) -> float:
    body = {
        "model": "gemma3:270m",
        "prompt": PROMPT,
        "raw": True,
        "stream": False,
        "options": {"temperature": 0, "num_predict": tokens, "num_thread": THREADS},
        **({"format": "json"} if structured else {}),
    }
    out = CLIENT.post(url + "/api/generate", json=body, timeout=600).json()
    return out["eval_count"] / (out["eval_duration"] / 1e9)


def server(url: str, tokens: int, structured: bool) -> float:
    body = {
        "prompt": PROMPT,
        "n_predict": tokens,
        "temperature": 0,
        "cache_prompt": False,
        **({"json_schema": {}} if structured else {}),
    }
    out = CLIENT.post(url + "/completion", json=body, timeout=600).json()
    return float(out["timings"]["predicted_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    store = bench_store()
    forge_proc, forge_url = start_forge(store)
    server_proc, server_url = start_llama_server(store, 1)
    results: dict[str, list[float]] = {}
    try:
        for run in range(args.runs + 1):  # the first round warms both up, untimed
            for name, call, url in (("FerrousForge", forge, forge_url), ("llama-server", server, server_url)):
                for structured in (False, True):
                    speed = call(url, args.tokens, structured)
                    if run:
                        results.setdefault(f"{name} {'json' if structured else 'free'}", []).append(speed)
    finally:
        stop(forge_proc, server_proc)
    print(f"gemma3:270m, {args.tokens} greedy tokens, {THREADS} threads, medians of {args.runs}:")
    print("| side | free tok/s | json tok/s | json / free |")
    print("|---|---|---|---|")
    for name in ("FerrousForge", "llama-server"):
        free, json = (statistics.median(results[f"{name} {kind}"]) for kind in ("free", "json"))
        print(f"| {name} | {free:.1f} | {json:.1f} | {json / free:.2f} |")


if __name__ == "__main__":
    main()
