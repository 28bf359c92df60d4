"""Streaming speed of /api/generate on gemma3:270m against llama.cpp's own llama-server and in-process
llama-cpp-python: time to first token and generation tokens/s, alternating runs, medians and ratios.

    make bench            # or: .venv/bin/python bench/generate_speed.py --runs 8

Each request: a 234-token prompt (Gemma turn format, unique prefix so no KV cache is reused), 128
tokens, 2 threads. ``--sampling greedy`` (the default): temperature 0 everywhere. ``--sampling default``:
FerrousForge gets no options at all (Ollama's defaults: temperature 0.8, top_k 40, top_p 0.9,
repeat_penalty 1.0) and the peers are given the same sampler explicitly. ``--sampling penalty``: the
same with ``repeat_penalty`` 1.1 set explicitly everywhere. llama-server is built from the llama.cpp
source vendored in the same llama-cpp-python sdist (bench/build_llama_server.sh) and run with
--no-jinja --chat-template gemma.

On the GPU machine (``bench/gpu_machine.sh``) three variables point it elsewhere: ``BENCH_GGUF`` (a GGUF
served as gemma3:270m instead of the catalogue's: created in the store through the API, and given to
llama-server and llama-cpp-python), ``LLAMA_SERVER`` (a llama-server binary built there) and
``BENCH_GPU_LAYERS`` (llama-server's and llama-cpp-python's ``-ngl``; FerrousForge offloads by its own
default, every layer that fits).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PROMPT_TOKENS, NEW_TOKENS, THREADS, CTX = 234, 128, 2, 4096
GGUF = os.environ.get("BENCH_GGUF")  # a local file served as gemma3:270m (the GPU machine has no catalogue)
GPU_LAYERS = int(os.environ.get("BENCH_GPU_LAYERS", "0"))
TEXT = (
    "The history of computing is longer than the history of computing hardware and modern computing "
    "technology and includes the history of methods intended for pen and paper or for chalk and slate, "
    "with or without the aid of tables. Digital computing is intimately tied to the representation of "
    "numbers. But long before abstractions like the number arose, there were mathematical concepts to serve "
    "the purposes of civilization. These concepts are implicit in concrete practices such as one-to-one "
    "correspondence, the basis of counting, comparison to a standard, used for measurement, and the 3-4-5 "
    "right triangle, a device for assuring a right angle. The earliest known tool for use in computation is "
    "the Sumerian abacus, and it was thought to have been invented in Babylon around 2700 to 2300 BC. Its "
    "original style of usage was by lines drawn in sand with pebbles. Abaci of a more modern design are "
    "still used as calculation tools today. This was the first known calculator and most advanced system "
    "of calculation known to date, preceding Archimedes by 2,000 years. Continue this essay in detail:"
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def stop(*procs: subprocess.Popen[bytes]) -> None:
    """Terminate the servers a benchmark started, and wait for them."""
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)


def bench_store() -> Path:
    return Path(os.environ.get("FERROUSFORGE_BENCH_STORE", Path(tempfile.gettempdir()) / "ff-bench-store"))


def start_forge(
    store: Path, pull: str | None = "gemma3:270m", extra_env: dict[str, str] | None = None, **settings: object
) -> tuple[subprocess.Popen[bytes], str]:
    """``ferrousforge serve`` from this environment on a free port; ``settings`` become FERROUSFORGE_*."""
    port = free_port()
    env = {**os.environ, "FERROUSFORGE_MODELS": str(store), "FERROUSFORGE_NUM_THREAD": str(THREADS)}
    env.update(extra_env or {})
    env.update({f"FERROUSFORGE_{k.upper()}": str(v) for k, v in settings.items()})
    script = Path(sys.executable).parent / "ferrousforge"  # (not installed on the GPU machine: the module)
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ferrousforge_host.cli"]
    command += ["serve", "--host", f"127.0.0.1:{port}"]
    if GGUF and pull == "gemma3:270m":
        pull = None
    proc = subprocess.Popen(command + (["--pull", pull] if pull else []), env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc, timeout=300)
    if GGUF and "gemma3:270m" not in {m["name"] for m in CLIENT.get(url + "/api/tags").json()["models"]}:
        create_from_file(url, "gemma3:270m", Path(GGUF))
    return proc, url


def upload(url: str, path: Path) -> str:
    """A file as a blob of the server's store; its digest."""
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    with path.open("rb") as f:
        CLIENT.post(f"{url}/api/blobs/{digest}", content=f, timeout=600).raise_for_status()
    return digest


def create_from_file(url: str, name: str, path: Path) -> None:
    """``ferrousforge create`` through the API: the file as a blob, then the model from it."""
    CLIENT.post(
        url + "/api/create", json={"model": name, "files": {path.name: upload(url, path)}}, timeout=600
    )


def model_file(store: Path) -> Path:
    """The GGUF llama-server and llama-cpp-python load: BENCH_GGUF, else the store's gemma3:270m blob."""
    return Path(GGUF) if GGUF else next((store / "blobs").glob("sha256-a5fd3b62*"))


def start_llama_server(
    store: Path, slots: int, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """llama.cpp's llama-server (built once by build_llama_server.sh) on the store's gemma3:270m blob;
    ``extra``: more of its flags."""
    binary = os.environ.get("LLAMA_SERVER")
    if not binary:
        build = subprocess.run(
            ["bash", str(ROOT / "bench/build_llama_server.sh")], check=True, capture_output=True, text=True
        )
        binary = build.stdout.strip().splitlines()[-1]
    blob = model_file(store)
    port = free_port()
    command = [
        binary,
        "-m",
        str(blob),
        "--port",
        str(port),
        "-t",
        str(THREADS),
        "-np",
        str(slots),
        "-c",
        str(CTX * slots),
        "--no-jinja",
        "--chat-template",
        "gemma",
        "-ngl",
        str(GPU_LAYERS),
        *extra,
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_up(url + "/health", proc)
    return proc, url


def prompts(tokenize: Callable[[str], list[int]], n: int) -> list[str]:
    """User texts whose Gemma-formatted prompt is exactly PROMPT_TOKENS tokens, each with a unique prefix."""
    out = []
    for i in range(n):
        words = f"Essay {i:03d} {os.urandom(3).hex()}. {TEXT}".split(" ")
        while True:
            text = " ".join(words)
            count = len(tokenize(gemma(text)))
            if count <= PROMPT_TOKENS:
                break
            words.pop(-2)
        filler = 0
        while len(tokenize(gemma(text))) < PROMPT_TOKENS:
            filler += 1
            text = " ".join(words[:-1] + ["more"] * filler + words[-1:])
        assert len(tokenize(gemma(text))) == PROMPT_TOKENS, len(tokenize(gemma(text)))
        out.append(text)
    return out


def gemma(text: str) -> str:
    return f"<start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n"


def measure(pieces: Iterator[str]) -> tuple[float, float, int]:
    """Returns (time to first token, tokens/s after it, tokens) over a stream of text pieces."""
    start = time.perf_counter()
    first = last = 0.0
    n = 0
    for _ in pieces:
        now = time.perf_counter()
        if n == 0:
            first = now
        last = now
        n += 1
    return first - start, (n - 1) / (last - first) if n > 1 else 0.0, n


CLIENT = httpx.Client(timeout=120)  # one keep-alive client for every target: no per-request setup
# Ollama's default sampler, given explicitly to the peers (llama-server's own defaults add min_p, DRY...)
DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.0}
SAMPLING = {
    "greedy": {"temperature": 0, "repeat_penalty": 1.0},
    "default": DEFAULTS,
    "penalty": {**DEFAULTS, "repeat_penalty": 1.1},
}
MODE = "greedy"


def generated(url: str, body: dict[str, object], timeout: float = 120) -> Iterator[str]:
    """The text pieces of a streamed FerrousForge /api/generate."""
    with CLIENT.stream("POST", url + "/api/generate", json=body, timeout=timeout) as r:
        for line in r.iter_lines():
            chunk = json.loads(line)
            if "error" in chunk:
                raise RuntimeError(f"HTTP {r.status_code}: {chunk['error']}")
            if not chunk["done"]:
                yield chunk["response"]


CLOSE = {"Connection": "close"}  # llama-server ends kept-alive connections after a few requests


def completed(
    url: str, body: dict[str, object], headers: dict[str, str] | None = None, timeout: float = 120
) -> Iterator[str]:
    """The text pieces of a streamed llama-server /completion."""
    with CLIENT.stream("POST", url + "/completion", json=body, headers=headers, timeout=timeout) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                chunk = json.loads(line[6:])
                if not chunk.get("stop"):
                    yield chunk.get("content", "")


def forge_pieces(url: str, text: str) -> Iterator[str]:
    options: dict[str, object] = {"num_predict": NEW_TOKENS}
    if MODE == "greedy":
        options.update(SAMPLING["greedy"])
    elif MODE == "penalty":
        options["repeat_penalty"] = 1.1
    return generated(url, {"model": "gemma3:270m", "prompt": text, "stream": True, "options": options})


def server_pieces(url: str, text: str) -> Iterator[str]:
    body = {
        "prompt": gemma(text),
        "stream": True,
        "n_predict": NEW_TOKENS,
        "cache_prompt": False,
        "samplers": ["penalties", "top_k", "top_p", "min_p", "temperature"],
        **SAMPLING[MODE],
    }
    return completed(url, body)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--sampling", choices=list(SAMPLING), default="greedy")
    args = parser.parse_args()
    global MODE
    MODE = args.sampling

    store = bench_store()
    forge, forge_url = start_forge(store)
    procs = [forge]
    try:
        server, server_url = start_llama_server(store, slots=1)
        procs.append(server)
        from llama_cpp import Llama

        llm = Llama(
            str(model_file(store)),
            n_ctx=CTX,
            n_threads=THREADS,
            n_threads_batch=THREADS,
            n_gpu_layers=GPU_LAYERS,
            verbose=False,
        )

        def tokenize(text: str) -> list[int]:
            return llm.tokenize(text.encode(), add_bos=True, special=True)

        def inproc_pieces(url: str, text: str) -> Iterator[str]:
            sampler = SAMPLING[MODE]
            for out in llm(
                gemma(text),
                max_tokens=NEW_TOKENS,
                temperature=float(sampler["temperature"]),
                top_k=int(sampler.get("top_k", 1)),
                top_p=float(sampler.get("top_p", 1.0)),
                min_p=0.0,
                repeat_penalty=float(sampler["repeat_penalty"]),
                stream=True,
            ):
                yield out["choices"][0]["text"]

        targets = {
            "ferrousforge /api/generate": (forge_pieces, forge_url),
            "llama-server /completion": (server_pieces, server_url),
            "llama-cpp-python in-process": (inproc_pieces, ""),
        }
        texts = prompts(tokenize, args.runs * len(targets) + len(targets))
        results: dict[str, list[tuple[float, float, int]]] = {k: [] for k in targets}
        for fn, url in targets.values():  # warm-up
            measure(fn(url, texts.pop()))
        names = list(targets)
        for run in range(args.runs):
            order = names[run % len(names) :] + names[: run % len(names)]  # alternate who goes first
            for name in order:
                fn, url = targets[name]
                results[name].append(measure(fn(url, texts.pop())))
        report(results)
    finally:
        stop(*procs)


def report(results: dict[str, list[tuple[float, float, int]]]) -> None:
    ref = "llama-server /completion"
    ref_ttft = statistics.median(r[0] for r in results[ref])
    ref_tps = statistics.median(r[1] for r in results[ref])
    print(
        f"{GGUF or 'gemma3:270m Q4_K_M'}, prompt {PROMPT_TOKENS} tokens, {NEW_TOKENS} tokens "
        f"({MODE} sampling), "
        f"{THREADS} threads, "
        f"{len(results[ref])} alternating runs each (medians)\n"
    )
    print("| target | tokens/s | time to first token | tokens/s vs llama-server | TTFT vs llama-server |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        ttft = statistics.median(r[0] for r in rows)
        tps = statistics.median(r[1] for r in rows)
        tokens = statistics.median(r[2] for r in rows)
        print(
            f"| {name} | {tps:.1f} | {ttft * 1000:.0f} ms | {tps / ref_tps:.2f}x | {ttft / ref_ttft:.2f}x |"
            + ("" if tokens == NEW_TOKENS else f" ({tokens:.0f} tokens)")
        )


if __name__ == "__main__":
    main()
