"""What the OpenAI layer costs: streaming tokens/s and time to first token of /v1/chat/completions
against /api/chat on the same server, model (gemma3:270m), prompt and greedy settings, alternating.

    .venv/bin/python bench/openai_overhead.py --runs 12
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from generate_speed import CLIENT, NEW_TOKENS, TEXT, THREADS, bench_store, measure, start_forge, stop

MODEL = "gemma3:270m"


def ollama_chat(url: str, text: str) -> Iterator[str]:
    body = {
        "model": "bench-gemma",
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        "options": {"temperature": 0, "num_predict": NEW_TOKENS, "repeat_penalty": 1.0},
    }
    with CLIENT.stream("POST", url + "/api/chat", json=body) as r:
        for line in r.iter_lines():
            chunk = json.loads(line)
            if not chunk["done"]:
                yield chunk["message"]["content"]


def openai_chat(url: str, text: str) -> Iterator[str]:
    body = {
        "model": "bench-gemma",
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        "temperature": 0,
        "max_tokens": NEW_TOKENS,
        "frequency_penalty": 0,
    }
    with CLIENT.stream("POST", url + "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choice = json.loads(line[6:])["choices"][0]
                if choice["finish_reason"] is None:
                    yield choice["delta"]["content"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=12)
    args = parser.parse_args()
    proc, url = start_forge(bench_store(), pull=MODEL)
    try:
        # Gemma's defaults set repeat_penalty 1.1 only through Ollama's options; OpenAI requests keep the
        # model's default too, so both sides run the same sampler: pin it for both.
        CLIENT.post(
            url + "/api/create",
            json={
                "model": "bench-gemma",
                "from": MODEL,
                "parameters": {"repeat_penalty": 1.0},
                "stream": False,
            },
        )
        targets = {"/api/chat": ollama_chat, "/v1/chat/completions": openai_chat}
        results: dict[str, list[tuple[float, float, int]]] = {k: [] for k in targets}
        for fn in targets.values():
            measure(fn(url, "warm up " + TEXT))
        for run in range(args.runs):
            order = list(targets) if run % 2 == 0 else list(reversed(targets))
            for name in order:
                results[name].append(measure(targets[name](url, f"Essay {run} {os.urandom(3).hex()} {TEXT}")))
        base_tps = statistics.median(r[1] for r in results["/api/chat"])
        base_ttft = statistics.median(r[0] for r in results["/api/chat"])
        print(f"{MODEL}, {NEW_TOKENS} greedy tokens, {THREADS} threads, {args.runs} alternating runs\n")
        print("| endpoint | tokens/s | time to first token | tokens/s vs /api/chat | TTFT vs /api/chat |")
        print("|---|---|---|---|---|")
        for name, rows in results.items():
            tps, ttft = statistics.median(r[1] for r in rows), statistics.median(r[0] for r in rows)
            ratios = f"{tps / base_tps:.3f}x | {ttft / base_ttft:.3f}x"
            print(f"| {name} | {tps:.1f} | {ttft * 1000:.0f} ms | {ratios} |")
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
