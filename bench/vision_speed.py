"""A chat turn with an image on a vision model: FerrousForge's /api/chat against llama.cpp's own
llama-server (--mmproj, /v1/chat/completions with an image_url), same llama.cpp source, same files.

The text model is smollm2:135m from the benchmark store; the projector is a random one of ViT-B/16's
shape (224×224 images in 16×16 patches, 12 layers of width 768, f16 weights: 196 image embeddings),
so the numbers are what encoding and decoding cost, whatever the weights say. Each run is a chat of two
turns: the first sends an image neither server has seen (random pixels, 224×224 and 640×480, as PNG),
the second resends it with the first reply and a follow-up question, as chat clients do (both servers
may reuse their cache there). Streaming, greedy, 16 new tokens; medians over --runs of time to first
token and tokens/s after it, for each turn.

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
from generate_speed import (
    CLIENT,
    CLOSE,
    THREADS,
    bench_store,
    free_port,
    measure,
    start_forge,
    stop,
    upload,
    wait_up,
)

from tinymodel import png, write_projector

NEW_TOKENS = 16
QUESTION = "Describe this picture in one sentence."
FOLLOW_UP = "What colour stands out most?"


def smollm2_blob(url: str, store: Path) -> Path:
    shown = CLIENT.post(url + "/api/show", json={"model": "smollm2:135m"}).json()
    path = Path(shown["modelfile"].split("\nFROM ", 1)[1].split("\n", 1)[0])
    assert path.is_file(), path
    return path


def images(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    shapes = [(224, 224, 3), (480, 640, 3)]
    return [png(rng.integers(0, 256, shapes[i % 2], dtype=np.uint8)) for i in range(n)]


def turns(reply: str | None) -> list[dict[str, str]]:
    """The conversation after the first message: nothing, or the reply and the follow-up."""
    return (
        []
        if reply is None
        else [{"role": "assistant", "content": reply}, {"role": "user", "content": FOLLOW_UP}]
    )


def forge_pieces(url: str, image: bytes, reply: str | None) -> Iterator[str]:
    first = {"role": "user", "content": QUESTION, "images": [base64.b64encode(image).decode()]}
    body = {
        "model": "smollm2-eyes",
        "messages": [first, *turns(reply)],
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


def server_pieces(url: str, image: bytes, reply: str | None) -> Iterator[str]:
    data = "data:image/png;base64," + base64.b64encode(image).decode()
    parts = [{"type": "image_url", "image_url": {"url": data}}, {"type": "text", "text": QUESTION}]
    body = {
        "messages": [{"role": "user", "content": parts}, *turns(reply)],
        "stream": True,
        "max_tokens": NEW_TOKENS,
        "temperature": 0,
    }
    # a new connection each time: llama-server closes a kept-alive one after a few requests, and a
    # request sent on it as it closes fails (sub-millisecond on 127.0.0.1)
    with CLIENT.stream("POST", url + "/v1/chat/completions", json=body, headers=CLOSE) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    yield delta["content"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    kept = tempfile.TemporaryDirectory(prefix="ff-vision-")  # removed when main returns
    work = Path(kept.name)
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
                "-np",  # as the host's defaults: 4 sequences of 4096 tokens
                "4",
                "-c",
                "16384",
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
            list(pieces(where, images(1, 99)[0], None))
        results: dict[tuple[str, int], list[tuple[float, float, int]]] = {}
        pictures = images(args.runs * len(targets), 7)
        for run in range(args.runs):  # interleaved, each target a new image every run
            for k, (name, (pieces, where)) in enumerate(targets.items()):
                image, said = pictures[run * len(targets) + k], []
                results.setdefault((name, 1), []).append(measure(kept(pieces(where, image, None), said)))
                results.setdefault((name, 2), []).append(measure(pieces(where, image, "".join(said))))
    finally:
        stop(*procs)
    print(f"{args.runs} runs, {THREADS} threads, {NEW_TOKENS} new tokens, smollm2 + a ViT-B/16 projector")
    print(
        "| turn | target | time to first token | tokens/s after it | TTFT vs llama-server | tokens/s vs it |"
    )
    print("|---|---|---|---|---|---|")
    for (name, turn), rows in results.items():
        ref = results[("llama-server /v1/chat/completions", turn)]
        ttft, rate = (statistics.median(r[i] for r in rows) for i in (0, 1))
        ref_ttft, ref_rate = (statistics.median(r[i] for r in ref) for i in (0, 1))
        ratios = f"{ttft / ref_ttft:.2f}× | {rate / ref_rate:.2f}×"
        print(f"| {turn} | {name} | {ttft * 1000:.0f} ms | {rate:.1f} | {ratios} |")


def kept(pieces: Iterator[str], said: list[str]) -> Iterator[str]:
    """The pieces, each also kept in ``said``."""
    for piece in pieces:
        said.append(piece)
        yield piece


if __name__ == "__main__":
    main()
