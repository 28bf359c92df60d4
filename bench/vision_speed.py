"""A chat turn with an image on a vision model: FerrousForge's /api/chat against llama.cpp's own
llama-server (--mmproj, /v1/chat/completions with an image_url), same llama.cpp source, same files.

The text model is smollm2:135m from the benchmark store; the projector is a random one of ViT-B/16's
shape (224×224 images in 16×16 patches, 12 layers of width 768, f16 weights: 196 image embeddings),
so the numbers are what encoding and decoding cost, whatever the weights say. Each run sends an image
neither server has seen (random pixels, 224×224 and 640×480, as PNG): llama-server's prompt cache can't
skip it. Streaming, greedy, 16 new tokens; median over --runs of time to first token, tokens/s after.

    .venv/bin/python bench/vision_speed.py [--runs 8]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from generate_speed import CLIENT, THREADS, bench_store, free_port, measure, start_forge, stop, wait_up

from tinymodel import png, write_projector

NEW_TOKENS = 16
QUESTION = "Describe this picture in one sentence."


def smollm2_blob(url: str, store: Path) -> Path:
    shown = CLIENT.post(url + "/api/show", json={"model": "smollm2:135m"}).json()
    path = Path(shown["modelfile"].split("\nFROM ", 1)[1].split("\n", 1)[0])
    assert path.is_file(), path
    return path


def upload(url: str, path: Path) -> str:
    import hashlib

    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    with path.open("rb") as f:
        CLIENT.post(f"{url}/api/blobs/{digest}", content=f, timeout=600).raise_for_status()
    return digest


def images(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    shapes = [(224, 224, 3), (480, 640, 3)]
    return [png(rng.integers(0, 256, shapes[i % 2], dtype=np.uint8)) for i in range(n)]


def forge_pieces(url: str, image: bytes) -> Iterator[str]:
    body = {
        "model": "smollm2-eyes",
        "messages": [{"role": "user", "content": QUESTION, "images": [base64.b64encode(image).decode()]}],
        "stream": True,
        "options": {"temperature": 0, "num_predict": NEW_TOKENS},
    }
    with CLIENT.stream("POST", url + "/api/chat", json=body) as r:
        for line in r.iter_lines():
            chunk = json.loads(line)
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if not chunk["done"]:
                yield chunk["message"]["content"]


def server_pieces(url: str, image: bytes) -> Iterator[str]:
    data = "data:image/png;base64," + base64.b64encode(image).decode()
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data}},
                    {"type": "text", "text": QUESTION},
                ],
            }
        ],
        "stream": True,
        "max_tokens": NEW_TOKENS,
        "temperature": 0,
        "cache_prompt": False,
    }
    with CLIENT.stream("POST", url + "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    yield delta["content"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ff-vision-"))
    projector = write_projector(
        work / "mmproj-vit-b16.gguf",
        n_embd=576,
        width=768,
        ff=3072,
        layers=12,
        heads=12,
        image=224,
        patch=16,
        f16=True,
        std=None,
    )
    forge, url = start_forge(bench_store(), pull="smollm2:135m")
    procs = [forge]
    try:
        model = smollm2_blob(url, bench_store())
        files = {"smollm2.gguf": upload(url, model), "mmproj.gguf": upload(url, projector)}
        CLIENT.post(
            url + "/api/create", json={"model": "smollm2-eyes", "files": files, "stream": False}
        ).raise_for_status()
        binary = subprocess.run(
            ["bash", str(Path(__file__).parent / "build_llama_server.sh")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
        port = free_port()
        server = subprocess.Popen(
            [
                binary,
                "-m",
                str(model),
                "--mmproj",
                str(projector),
                "--port",
                str(port),
                "-t",
                str(THREADS),
                "-np",
                "1",
                "-c",
                "2048",
                "--no-warmup",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(server)
        server_url = f"http://127.0.0.1:{port}"
        wait_up(server_url + "/health", server)
        targets = {
            "FerrousForge /api/chat": (forge_pieces, url),
            "llama-server /v1/chat/completions": (server_pieces, server_url),
        }
        for pieces, where in targets.values():  # warm: load, first image
            list(pieces(where, images(1, 99)[0]))
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in targets}
        pictures = images(args.runs * len(targets), 7)
        for run in range(args.runs):  # interleaved, each target a new image every run
            for k, (name, (pieces, where)) in enumerate(targets.items()):
                results[name].append(measure(pieces(where, pictures[run * len(targets) + k])))
    finally:
        stop(*procs)
    ref = "llama-server /v1/chat/completions"
    ref_ttft = statistics.median(r[0] for r in results[ref])
    ref_rate = statistics.median(r[1] for r in results[ref])
    print(f"{args.runs} runs, {THREADS} threads, {NEW_TOKENS} new tokens, smollm2 + a ViT-B/16 projector")
    print("| target | time to first token | tokens/s after it | TTFT vs llama-server | tokens/s vs it |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        ttft = statistics.median(r[0] for r in rows)
        rate = statistics.median(r[1] for r in rows)
        ratios = f"{ttft / ref_ttft:.2f}× | {rate / ref_rate:.2f}×"
        print(f"| {name} | {ttft * 1000:.0f} ms | {rate:.1f} | {ratios} |")


if __name__ == "__main__":
    main()
