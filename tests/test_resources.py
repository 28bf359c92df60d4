"""Resource management: memory budget and LRU eviction, loaded-model limit, waiting for room, and
a clean drain on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from ferrousforge.mold import ModelSpec
from ferrousforge.options import Options
from ferrousforge_host.engines.llamacpp import LlamaCppMold

from conftest import free_port, start_host
from tinymodel import write_tiny_llama


def loaded(url: str) -> list[str]:
    return [m["name"] for m in httpx.get(url + "/api/ps").json()["models"]]


def load(url: str, model: str) -> httpx.Response:
    return httpx.post(
        url + "/api/generate",
        json={"model": model, "prompt": "a", "stream": False, "options": {"num_predict": 2}},
        timeout=60,
    )


def generate_long(url: str, model: str) -> dict:
    body = {"model": model, "prompt": "the", "stream": False, "options": {"num_predict": 400}}
    return httpx.post(url + "/api/generate", json=body, timeout=120).json()


def distinct(tmp_path: Path, names: str) -> dict[str, Path]:
    """A tiny model of its own for each name (names over one file would share one loaded engine)."""
    return {name: write_tiny_llama(tmp_path / f"{name}.gguf", seed=i) for i, name in enumerate(names)}


def test_least_recently_used_idle_model_is_evicted(tmp_path: Path) -> None:
    for h in start_host(tmp_path / "store", max_loaded_models=2):
        for name, gguf in distinct(tmp_path, "abc").items():
            h.pull_file(name, gguf)
        assert load(h.url, "a").status_code == 200
        assert load(h.url, "b").status_code == 200
        assert load(h.url, "a").status_code == 200  # a used last: b is now least recently used
        assert load(h.url, "c").status_code == 200
        assert sorted(loaded(h.url)) == ["a:latest", "c:latest"]


def test_memory_budget_evicts_then_refuses_what_cannot_fit(tmp_path: Path, tiny_gguf: Path) -> None:
    need = LlamaCppMold.estimate_bytes(ModelSpec("t", "gguf", str(tiny_gguf)), Options(num_parallel=4))
    for h in start_host(tmp_path / "store", max_memory=int(need * 1.5)):
        for name, gguf in distinct(tmp_path, "ab").items():
            h.pull_file(name, gguf)
        assert load(h.url, "a").status_code == 200
        assert load(h.url, "b").status_code == 200
        assert loaded(h.url) == ["b:latest"]  # two do not fit: a made room
        r = httpx.post(
            h.url + "/api/generate",
            json={"model": "a", "prompt": "x", "options": {"num_ctx": 2048, "num_parallel": 8}},
        )
        assert r.status_code == 503 and "memory budget" in r.json()["error"]
        assert "retry-after" not in r.headers  # retrying cannot help
        assert loaded(h.url) == ["b:latest"]  # nothing was evicted for a load that could not fit


def test_a_load_waits_for_a_busy_model_no_deadlock(
    tmp_path: Path, tiny_gguf: Path, tiny_gguf_plain: Path
) -> None:
    for h in start_host(tmp_path / "store", max_loaded_models=1):
        h.pull_file("a", tiny_gguf)
        h.pull_file("b", tiny_gguf_plain)
        with ThreadPoolExecutor(6) as pool:
            results = list(
                pool.map(lambda m, url=h.url: generate_long(url, m), ["a", "b", "a", "b", "a", "b"])
            )
        assert all(r.get("done") and r["eval_count"] == 400 for r in results), results
        assert len(loaded(h.url)) == 1


def test_sigterm_drains_a_stream_in_flight(tmp_path: Path, tiny_gguf: Path) -> None:
    port = free_port()
    env = {**os.environ, "FERROUSFORGE_MODELS": str(tmp_path / "store"), "FERROUSFORGE_NUM_THREAD": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferrousforge_host.cli", "serve", "--host", f"127.0.0.1:{port}"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(url)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        httpx.post(
            url + "/api/pull", json={"model": "tiny", "source": str(tiny_gguf), "stream": False}, timeout=60
        )
        body = {"model": "tiny", "prompt": "the", "options": {"num_predict": 1500, "temperature": 0}}
        chunks = []
        with httpx.stream("POST", url + "/api/generate", json=body, timeout=60) as r:
            for line in r.iter_lines():
                chunks.append(json.loads(line))
                if len(chunks) == 3:
                    proc.send_signal(signal.SIGTERM)  # mid-stream
        assert chunks[-1]["done"] and chunks[-1]["eval_count"] == 1500  # the stream was finished, not cut
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


def test_a_model_load_leaves_no_thread_behind_but_the_engines_own(tmp_path: Path) -> None:
    """llama.cpp's OpenMP team lives as long as the thread that started it: a team left by the load
    (AMX CPUs repack Q4_K weights in parallel) made libgomp count more threads than cores and stop
    spinning at its barriers, and the decode thread ran at half speed."""
    from tinymodel import write_tiny_llama

    path = write_tiny_llama(tmp_path / "q4k.gguf", q4k=True)
    before = set(os.listdir("/proc/self/task"))
    mold = LlamaCppMold(ModelSpec("q4k", "gguf", str(path)), Options(num_thread=2))
    mold.load_sync()
    try:
        new = set(os.listdir("/proc/self/task")) - before
        assert new == {str(mold._thread.native_id)}
    finally:
        mold.unload_sync()
