"""GGUF generation on the wgpu engine (the GPU compute layer's decoder; lavapipe here) through the
host's API, against the llama.cpp engine serving the same model in the same server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Host, start_host

WGPU = {"engine": "wgpu"}


@pytest.fixture(scope="module")
def gen_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    from tinymodel import write_tiny_gguf_from_hf, write_tiny_llama

    root = tmp_path_factory.mktemp("wgpu-gen")
    path = write_tiny_llama(root / "tiny.gguf")
    for h in start_host(root / "store"):
        h.pull_file("tiny", path)  # served by llama.cpp
        h.pull_file("tiny-gpu", path)  # the same file, asked for on wgpu (an engine is a load option)
        h.pull_file("qwen", write_tiny_gguf_from_hf(root / "qwen2.gguf", "qwen2", seed=1, pre="qwen2"))
        # an architecture the GPU decoder lacks (not named phi3: llama.cpp takes that for Phi-3's vocabulary)
        h.pull_file("phi", write_tiny_gguf_from_hf(root / "other.gguf", "phi3", seed=1))
        yield h


def generate(host: Host, model: str, **options: object) -> dict:
    body = {"model": model, "prompt": "the cat", "stream": False, "options": {"num_predict": 16, **options}}
    with host.client(timeout=300) as c:
        r = c.post("/api/generate", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_greedy_output_equals_the_llama_cpp_engines(gen_host: Host) -> None:
    ours = generate(gen_host, "tiny-gpu", temperature=0, **WGPU)
    theirs = generate(gen_host, "tiny", temperature=0)
    assert ours["accelerator"] == "wgpu" and theirs["accelerator"] == "cpu"
    assert ours["response"] == theirs["response"] and ours["eval_count"] == theirs["eval_count"] == 16
    assert ours["context"] == theirs["context"]
    # the next turn reuses the cached prefix: still the same as llama.cpp's
    more = {"context": ours["context"]}
    with gen_host.client(timeout=300) as c:
        body = {"prompt": " and", "stream": False, **more}
        a = c.post(
            "/api/generate",
            json={"model": "tiny-gpu", **body, "options": {"num_predict": 8, "temperature": 0, **WGPU}},
        )
        b = c.post(
            "/api/generate", json={"model": "tiny", **body, "options": {"num_predict": 8, "temperature": 0}}
        )
    assert a.json()["response"] == b.json()["response"]


def test_streams_with_ollamas_stats_and_stops(gen_host: Host) -> None:
    body = {
        "model": "tiny-gpu",
        "prompt": "the cat",
        "options": {"num_predict": 12, "temperature": 0, **WGPU},
    }
    with gen_host.client(timeout=300) as c, c.stream("POST", "/api/generate", json=body) as r:
        lines = [json.loads(x) for x in r.iter_lines()]
    assert len(lines) > 3 and lines[-1]["done"] and not any(x["done"] for x in lines[:-1])
    final = lines[-1]
    assert final["done_reason"] == "length" and final["eval_count"] == 12 and final["prompt_eval_count"] > 0
    text = "".join(x["response"] for x in lines)
    word = text.split()[2]
    stopped = generate(gen_host, "tiny-gpu", temperature=0, num_predict=12, stop=[word], **WGPU)
    assert stopped["done_reason"] == "stop" and word not in stopped["response"]
    assert text.startswith(stopped["response"])


def test_sampling_with_a_seed_is_reproducible(gen_host: Host) -> None:
    one = generate(gen_host, "tiny-gpu", temperature=0.9, top_k=40, top_p=0.95, seed=42, **WGPU)
    two = generate(gen_host, "tiny-gpu", temperature=0.9, top_k=40, top_p=0.95, seed=42, **WGPU)
    other = generate(gen_host, "tiny-gpu", temperature=0.9, top_k=40, top_p=0.95, seed=7, **WGPU)
    assert one["response"] == two["response"] and one["response"] != other["response"]
    penalized = generate(gen_host, "tiny-gpu", temperature=0, repeat_penalty=1.5, **WGPU)
    assert penalized["response"] == generate(gen_host, "tiny", temperature=0, repeat_penalty=1.5)["response"]


def test_a_full_window_shifts_as_on_llama_cpp(gen_host: Host) -> None:
    """``shift`` (default true): past a full window generation goes on, as on the llama.cpp engine
    (tokens equal until the first shift); ``shift: false`` ends it at the window's edge."""
    small = {"num_ctx": 32, "num_predict": 60, "temperature": 0}

    def run(model: str, shift: bool = True, **options: object) -> dict:
        body = {"model": model, "prompt": "the cat", "stream": False, "shift": shift, "options": options}
        with gen_host.client(timeout=300) as c:
            r = c.post("/api/generate", json=body)
        assert r.status_code == 200, r.text
        return r.json()

    ours, theirs = run("tiny-gpu", **small, **WGPU), run("tiny", **small)
    assert ours["eval_count"] == theirs["eval_count"] == 60 and ours["done_reason"] == "length"
    assert ours["context"][:31] == theirs["context"][:31]  # the same until the window first filled
    sampled = run("tiny-gpu", **{**small, "temperature": 0.8, "seed": 3}, **WGPU)
    assert sampled["eval_count"] == 60
    ended = run("tiny-gpu", False, **small, **WGPU)
    assert ended["done_reason"] == "length" and ended["prompt_eval_count"] + ended["eval_count"] == 32


def test_ps_and_info_say_what_the_gpu_holds(gen_host: Host) -> None:
    generate(gen_host, "tiny-gpu", num_predict=1, **WGPU)
    with gen_host.client() as c:
        running = {m["name"]: m for m in c.get("/api/ps").json()["models"]}["tiny-gpu:latest"]
        info = {m["name"]: m for m in c.get("/api/info").json()["models"]}["tiny-gpu:latest"]
    assert info["weights"] == "f16" and running["engine"] == "wgpu"
    # the weights in f16 and the KV cache, not the file; a CPU adapter's memory is not VRAM
    assert running["size"] > 0 and running["size_vram"] == 0


def test_a_qwen2_model_answers_on_wgpu_as_on_llama_cpp(gen_host: Host) -> None:
    ours = generate(gen_host, "qwen", temperature=0, **WGPU)
    theirs = generate(gen_host, "qwen", temperature=0, engine="llama.cpp")
    assert ours["accelerator"] == "wgpu" and theirs["accelerator"] == "cpu"
    assert ours["context"] == theirs["context"] and ours["eval_count"] == 16


def test_an_architecture_the_gpu_decoder_lacks_is_refused_by_name(gen_host: Host) -> None:
    with gen_host.client() as c:
        r = c.post("/api/generate", json={"model": "phi", "prompt": "x", "stream": False, "options": WGPU})
    assert r.status_code == 400 and "not phi3 (options.engine: llama.cpp)" in r.json()["error"]
    assert generate(gen_host, "phi", num_predict=2)["accelerator"] == "cpu"  # auto: llama.cpp


def test_structured_output_points_to_llama_cpp(gen_host: Host) -> None:
    with gen_host.client() as c:
        r = c.post(
            "/api/generate",
            json={"model": "tiny-gpu", "prompt": "x", "format": "json", "stream": False, "options": WGPU},
        )
    assert r.status_code == 400 and "llama.cpp engine" in r.json()["error"]


def test_auto_keeps_the_loaded_wgpu_engine_and_passes_it_by_for_what_it_lacks(gen_host: Host) -> None:
    """A request without an engine is served by the engine already running the model (no reload back to
    llama.cpp); one that needs a grammar or logprobs, which the wgpu engine lacks, goes to llama.cpp
    instead of failing. Only a request that names wgpu is told no."""
    assert generate(gen_host, "tiny-gpu", num_predict=2, **WGPU)["accelerator"] == "wgpu"
    assert generate(gen_host, "tiny-gpu", num_predict=2)["accelerator"] == "wgpu"
    with gen_host.client(timeout=300) as c:
        body = {"model": "tiny-gpu", "prompt": "x", "stream": False, "options": {"num_predict": 4}}
        shaped = c.post("/api/generate", json={**body, "format": "json"})
        assert shaped.status_code == 200 and shaped.json()["accelerator"] == "cpu", shaped.text
        scored = c.post("/api/generate", json={**body, "logprobs": True})
        assert scored.status_code == 200 and scored.json()["logprobs"], scored.text


def test_a_server_preferring_wgpu_still_answers_what_it_lacks(tmp_path: Path, tiny_gguf: Path) -> None:
    import openai

    for h in start_host(tmp_path / "store", engine="gguf=wgpu"):
        h.pull_file("tiny", tiny_gguf)
        assert generate(h, "tiny", num_predict=2)["accelerator"] == "wgpu"
        client = openai.OpenAI(base_url=h.url + "/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "hi"}],
            response_format={"type": "json_object"},
            max_tokens=8,
            logprobs=True,
        )
        assert reply.choices[0].logprobs is not None
        with h.client() as c:
            assert [m["engine"] for m in c.get("/api/ps").json()["models"]] == ["llama.cpp"]


@pytest.mark.integration
def test_smollm2_answers_on_the_wgpu_engine(tmp_path: Path) -> None:
    import ollama

    for h in start_host(tmp_path / "store"):
        with h.client(timeout=300) as c:
            assert c.post("/api/pull", json={"model": "smollm2:135m", "stream": False}).status_code == 200
        reply = ollama.Client(host=h.url).chat(
            "smollm2:135m",
            messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}],
            options={"temperature": 0, "engine": "wgpu", "num_ctx": 256},
        )
        assert "Paris" in reply.message.content


@pytest.mark.parametrize("parallel", [1, 4])
def test_requests_at_once_each_get_their_own_answer(gen_host: Host, parallel: int) -> None:
    """Four requests at once on the wgpu engine: with num_parallel 4 their decode steps share passes,
    with 1 they take turns; either way each answer is the one it gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    prompts = ["the cat", "a dog and", "the cat sat", "is it"]
    options = {"num_predict": 10, "temperature": 0, "num_parallel": parallel, **WGPU}

    def ask(prompt: str) -> str:
        body = {"model": "tiny-gpu", "prompt": prompt, "stream": False, "options": options}
        with gen_host.client(timeout=300) as c:
            r = c.post("/api/generate", json=body)
        assert r.status_code == 200, r.text
        return r.json()["response"]

    alone = [ask(p) for p in prompts]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(ask, prompts))
    assert together == alone
    assert len(set(alone)) > 1
