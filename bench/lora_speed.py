"""A LoRA adapter's cost: gemma3:270m with a rank-16 adapter on every attention and feed-forward
projection, FerrousForge (a model made with ``adapters``) against llama-server ``--lora``, and each
without the adapter.

    .venv/bin/python bench/lora_speed.py [--runs 6]

The adapter is random (f16, as convert_lora_to_gguf writes; no adapter can be fetched here, and the
cost does not depend on its values). Each run: a ~470-token prompt with a unique prefix, 128 greedy
tokens streamed, 2 threads; the four targets alternate. llama-server is built from the same llama.cpp
source (bench/build_llama_server.sh), one slot, 4096 tokens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np

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
    model_file,
    start_forge,
    start_llama_server,
    stop,
    upload,
)

from ferrousforge.gguf import read_file_tensors

NEW_TOKENS, RANK = 128, 16
TARGETS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def write_lora(base: Path, path: Path) -> Path:
    """A random rank-RANK adapter over every TARGETS weight of ``base``."""
    meta, tensors = read_file_tensors(str(base))
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), str(meta["general.architecture"]))
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(RANK))
    for name, info in tensors.items():
        if name.split(".")[-2] in TARGETS:
            n_in, n_out = info.shape[:2]
            w.add_tensor(name + ".lora_a", (rng.standard_normal((RANK, n_in)) * 0.01).astype(np.float16))
            w.add_tensor(name + ".lora_b", (rng.standard_normal((n_out, RANK)) * 0.01).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def prompt(i: int) -> str:
    return f"Essay {i:03d} {os.urandom(4).hex()}. " + " ".join([TEXT] * 2)


def forge_pieces(url: str, model: str, text: str) -> Iterator[str]:
    options = {"num_predict": NEW_TOKENS, "temperature": 0, "repeat_penalty": 1.0}
    return generated(url, {"model": model, "prompt": text, "stream": True, "options": options}, 600)


def server_pieces(url: str, model: str, text: str) -> Iterator[str]:
    del model
    body = {"prompt": gemma(text), "stream": True, "n_predict": NEW_TOKENS, "cache_prompt": False}
    body |= {"temperature": 0, "repeat_penalty": 1.0}
    return completed(url, body, CLOSE, 600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()
    store = bench_store()
    forge, forge_url = start_forge(store)
    procs = [forge]
    try:
        base = model_file(store)
        lora = write_lora(base, Path(os.environ.get("TMPDIR", "/tmp")) / "ff-bench-lora.gguf")
        made = CLIENT.post(
            forge_url + "/api/create",
            json={
                "model": "gemma3-lora",
                "from": "gemma3:270m",
                "adapters": {lora.name: upload(forge_url, lora)},
            },
            timeout=600,
        )
        made.raise_for_status()
        plain, plain_url = start_llama_server(store, 1)
        procs.append(plain)
        tuned, tuned_url = start_llama_server(store, 1, ("--lora", str(lora)))
        procs.append(tuned)
        targets = {
            "FerrousForge, adapter": (forge_pieces, forge_url, "gemma3-lora"),
            "llama-server --lora": (server_pieces, tuned_url, ""),
            "FerrousForge, no adapter": (forge_pieces, forge_url, "gemma3:270m"),
            "llama-server, no adapter": (server_pieces, plain_url, ""),
        }
        said = {name: "".join(fn(url, model, "Say hello.")) for name, (fn, url, model) in targets.items()}
        results: dict[str, list[tuple[float, float, int]]] = {k: [] for k in targets}
        names = list(targets)
        for run in range(args.runs):
            for name in names[run % 4 :] + names[: run % 4]:
                fn, url, model = targets[name]
                results[name].append(measure(fn(url, model, prompt(run))))
        print(
            f"gemma3:270m + a rank-{RANK} f16 LoRA ({lora.stat().st_size / 2**20:.1f} MiB) on "
            f"{', '.join(TARGETS)}; ~470-token prompt, {NEW_TOKENS} greedy tokens, {THREADS} threads, "
            f"medians of {args.runs} alternating runs\n"
        )
        print("| target | first token | tokens/s | TTFT vs llama-server | tokens/s vs llama-server |")
        print("|---|---|---|---|---|")
        for name, rows in results.items():
            ref = results[names[1] if names.index(name) < 2 else names[3]]  # the same adapter (or none)
            ttft, tps = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
            ref_ttft, ref_tps = statistics.median(r[0] for r in ref), statistics.median(r[1] for r in ref)
            print(
                f"| {name} | {ttft * 1000:.0f} ms | {tps:.1f} "
                f"| {ttft / ref_ttft:.2f}x | {tps / ref_tps:.2f}x |"
            )
        same = said["FerrousForge, adapter"] == said["llama-server --lora"]
        print(f"\nGreedy replies to 'Say hello.' with the adapter: {'the same' if same else 'DIFFERENT'}")
    finally:
        stop(*procs)


if __name__ == "__main__":
    main()
