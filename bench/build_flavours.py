"""Issue G's CPU benchmark: what the crash-proof design costs. Streaming /api/generate on gemma3:270m
(234-token prompt, 128 greedy tokens, 2 threads), alternating runs, medians:

- runner processes (the default) vs the engine inside the server process (FERROUSFORGE_RUNNERS=0);
- the ``safe`` llama.cpp build (GGML_NATIVE=OFF, this CPU's instruction sets named, no AMX) vs the
  ``native`` one (-march=native), both from setup's wheel cache (scripts/llama_build.py);
- llama.cpp's own llama-server from the same source as the reference.

    .venv/bin/python bench/build_flavours.py --runs 8

The safe wheel must be in the cache: `.venv/bin/python scripts/llama_build.py --flavour safe ...` builds it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import llama_build
from generate_speed import (
    bench_store,
    forge_pieces,
    measure,
    prompts,
    report,
    server_pieces,
    start_forge,
    start_llama_server,
    stop,
)

CACHE = Path.home() / ".cache/ferrousforge/wheels"


def flavour_path(flavour: str, version: str = "0.3.36") -> str:
    """A folder holding that flavour's llama_cpp package (from the wheel cache), for PYTHONPATH."""
    entry = llama_build.entry_for(CACHE, version, flavour, llama_build.cpu_flags())
    if entry.wheel is None:
        raise SystemExit(f"no {flavour} wheel in {entry.folder}: build it with scripts/llama_build.py")
    target = Path(tempfile.gettempdir()) / f"ff-llama-{flavour}"
    if not (target / "llama_cpp").is_dir():
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
        subprocess.run([*pip, str(entry.wheel)], check=True)
    return str(target)


def crossing_cost(calls: int = 2000) -> float:
    """Microseconds for one request and its reply across the runner boundary (a tiny model's
    count_tokens), the cost a streamed token pays once."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from ferrousforge.mold import ModelSpec
    from ferrousforge.options import Options
    from ferrousforge_host.engines.llamacpp import LlamaCppMold
    from ferrousforge_host.runner import isolated

    from tinymodel import write_tiny_llama

    kept = tempfile.TemporaryDirectory()  # removed when this returns
    path = write_tiny_llama(Path(kept.name) / "tiny.gguf")
    mold = isolated(LlamaCppMold)(ModelSpec("tiny", "gguf", str(path)), Options(num_thread=1))
    mold.load_sync()
    try:
        started = time.perf_counter()
        for _ in range(calls):
            mold.count_tokens("the cat")
        return (time.perf_counter() - started) / calls * 1e6
    finally:
        mold.unload_sync()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    store = bench_store()
    native = {"PYTHONPATH": flavour_path("native")}
    safe = {"PYTHONPATH": flavour_path("safe")}
    servers = {
        "ferrousforge, runner processes, native build": start_forge(store, extra_env=native),
        "ferrousforge, in-process engine, native build": start_forge(store, None, native, runners=0),
        "ferrousforge, runner processes, safe build": start_forge(store, None, safe),
    }
    procs = [proc for proc, _ in servers.values()]
    try:
        server, server_url = start_llama_server(store, slots=1)
        procs.append(server)
        targets = {name: (forge_pieces, url) for name, (_, url) in servers.items()}
        targets["llama-server /completion"] = (server_pieces, server_url)
        from llama_cpp import Llama

        blob = next((store / "blobs").glob("sha256-a5fd3b62*"))
        vocab = Llama(str(blob), n_ctx=512, vocab_only=True, verbose=False)
        texts = prompts(lambda t: vocab.tokenize(t.encode(), add_bos=True, special=True), args.runs * 5 + 5)
        results: dict[str, list[tuple[float, float, int]]] = {k: [] for k in targets}
        for fn, url in targets.values():  # warm-up: loads each model
            measure(fn(url, texts.pop()))
        names = list(targets)
        for run in range(args.runs):
            for name in names[run % len(names) :] + names[: run % len(names)]:
                fn, url = targets[name]
                results[name].append(measure(fn(url, texts.pop())))
        report(results)
        cost = crossing_cost()
        print(f"\none request/reply across the runner boundary: {cost:.0f} µs (mean of 2000 calls)")
    finally:
        stop(*procs)


if __name__ == "__main__":
    main()
