"""Issue H2's benchmark on this machine: GGUF generation on the wgpu engine (the GPU compute layer's
decoder) against the llama.cpp engine, the same server and model, streaming /api/generate.

    .venv/bin/python bench/gpu_generate.py --runs 2

Without a GPU, wgpu runs on lavapipe (Mesa's CPU Vulkan driver): these are correctness-vehicle speeds,
recorded so nobody mistakes them for targets. Greedy, a short chat prompt, 8 new tokens, num_ctx 256.
With a Vulkan build of llama.cpp the llama.cpp engine runs on the same Vulkan device, its shaders
against ours: ``LLAMA_CPP_LIB_PATH=<vulkan build>/lib GGML_VK_VISIBLE_DEVICES=0`` (lavapipe included).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate_speed import CLIENT, bench_store, measure, start_forge, stop

MODELS = {
    "llama.cpp": "smollm2:135m",
    "wgpu": "smollm2-wgpu",
}  # one loaded model each: an engine is a load option
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


def pieces(url: str, engine: str, done: dict) -> Iterator[str]:
    body = {
        "model": MODELS[engine],
        "prompt": PROMPT,
        "raw": True,
        "options": {"temperature": 0, "num_predict": 8, "num_ctx": 256, "engine": engine},
    }
    with CLIENT.stream("POST", url + "/api/generate", json=body, timeout=600) as r:
        for line in r.iter_lines():
            chunk = json.loads(line)
            if chunk["done"]:
                done.update(chunk)
            else:
                yield chunk["response"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    proc, url = start_forge(bench_store(), pull="smollm2:135m")
    try:
        CLIENT.post(url + "/api/copy", json={"source": MODELS["llama.cpp"], "destination": MODELS["wgpu"]})
        rows: dict[str, list[tuple[float, float, float]]] = {e: [] for e in MODELS}
        texts: dict[str, str] = {}
        ran_on: dict[str, str] = {}
        for engine in MODELS:  # load both
            done: dict = {}
            texts[engine] = "".join(pieces(url, engine, done))
            ran_on[engine] = done.get("accelerator", "?")
        for _ in range(args.runs):
            for engine in MODELS:
                done = {}
                ttft, tps, _n = measure(pieces(url, engine, done))
                prompt_tps = done["prompt_eval_count"] / (done["prompt_eval_duration"] / 1e9)
                rows[engine].append((ttft, tps, prompt_tps))
        print("| engine | accelerator | decode tok/s | prompt tok/s | time to first token | answer |")
        print("|---|---|---|---|---|---|")
        for engine, values in rows.items():
            ttft, tps, prompt_tps = (statistics.median(v[i] for v in values) for i in range(3))
            cells = (
                engine,
                ran_on[engine],
                f"{tps:.2f}",
                f"{prompt_tps:.1f}",
                f"{ttft:.2f} s",
                repr(texts[engine]),
            )
            print("| " + " | ".join(cells) + " |")
    finally:
        stop(proc)


if __name__ == "__main__":
    main()
