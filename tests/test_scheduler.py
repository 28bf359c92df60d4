"""Scheduling over real HTTP: lazy load, one-at-a-time per model in order, reload on load options."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from conftest import Host, start_host


def stream_times(url: str, body: dict, barrier: threading.Barrier | None = None) -> tuple[str, str, dict]:
    with httpx.Client(timeout=60) as c:
        if barrier is not None:
            barrier.wait()  # every client is built before any request goes out
        chunks = [json.loads(x) for x in c.post(url + "/api/generate", json=body).text.splitlines()]
    return chunks[0]["created_at"], chunks[-1]["created_at"], chunks[-1]


def test_with_one_slot_requests_run_one_at_a_time_in_order(tmp_path: Path, tiny_gguf: Path) -> None:
    for one_slot in start_host(tmp_path / "store", num_parallel=1):
        one_slot.pull_file("tiny", tiny_gguf)
        spans = _three_streams(one_slot)
    for (_, end, _), (start, _, _) in itertools.pairwise(spans):
        assert start >= end  # no overlap: each stream starts after the previous one ended
    assert all(final["eval_count"] == 200 for _, _, final in spans)
    assert len({final["context"][-1] for _, _, final in spans}) == 1  # same greedy output each time


def _three_streams(host: Host) -> list[tuple[str, str, dict]]:
    body = {"model": "tiny", "prompt": "the", "options": {"num_predict": 200, "temperature": 0}}
    with host.client() as c:
        c.post("/api/generate", json={"model": "tiny"})  # load first so all find it warm
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(stream_times, host.url, body) for _ in range(3)]
        return sorted(f.result() for f in futures)


def test_concurrent_streams_decode_together_and_match_solo_output(host: Host) -> None:
    """Four streams share each llama_decode (4 slots), and each gets its solo tokens: all of its
    first 200 (a stream given another's state or logits strays at once). Later, a near tie of this
    random model's logits can break another way in a batch of four than alone (llama.cpp's sums
    differ with the batch's size), so past that only the counts must match."""
    prompts = ["the cat", "one of the", "it was not", "and they are at"]

    def body(p: str, n: int) -> dict:
        return {"model": "tiny", "prompt": p, "options": {"num_predict": n, "temperature": 0}}

    solo = [stream_times(host.url, body(p, 400 + 10 * i))[2]["context"] for i, p in enumerate(prompts)]
    barrier = threading.Barrier(4)
    with ThreadPoolExecutor(4) as pool:
        runs = list(
            pool.map(
                lambda ip: stream_times(host.url, body(ip[1], 400 + 10 * ip[0]), barrier), enumerate(prompts)
            )
        )
    assert [final["context"][:200] for _, _, final in runs] == [context[:200] for context in solo]
    assert [len(final["context"]) for _, _, final in runs] == [len(context) for context in solo]
    starts, ends = sorted(r[0] for r in runs), sorted(r[1] for r in runs)
    assert starts[-1] < ends[0]  # all four were generating at the same time


def test_different_models_run_side_by_side(host: Host, tiny_gguf_plain: Path) -> None:
    host.pull_file("other", tiny_gguf_plain)
    a = {"model": "tiny", "prompt": "a", "options": {"num_predict": 300}}
    b = {"model": "other", "prompt": "b", "options": {"num_predict": 300}}
    with ThreadPoolExecutor(2) as pool:
        ra, rb = pool.submit(stream_times, host.url, a), pool.submit(stream_times, host.url, b)
        fa, fb = ra.result()[2], rb.result()[2]
    assert fa["done"] and fb["done"]
    with host.client() as c:
        assert {m["name"] for m in c.get("/api/ps").json()["models"]} == {"tiny:latest", "other:latest"}


def test_changing_load_options_reloads_the_model(host: Host) -> None:
    base = {"model": "tiny", "prompt": "a", "stream": False, "options": {"num_predict": 1}}
    with host.client() as c:
        first = c.post("/api/generate", json=base).json()
        again = c.post("/api/generate", json=base).json()
        assert first["load_duration"] > 0 and again["load_duration"] == 0
        assert c.get("/api/ps").json()["models"][0]["context_length"] == 2048  # capped by the model
        smaller = c.post("/api/generate", json={**base, "options": {"num_predict": 1, "num_ctx": 256}}).json()
        assert smaller["load_duration"] > 0
        assert c.get("/api/ps").json()["models"][0]["context_length"] == 256


def test_names_over_the_same_weights_share_one_engine(host: Host) -> None:
    """A copy and a Modelfile variant (its own SYSTEM) load no second engine: each name is listed as
    loaded, the engine counts once, and it is unloaded with its last name. A different num_ctx is
    another engine."""
    scheduler = host.app.state.scheduler  # type: ignore[attr-defined]
    gen = {"prompt": "hi", "stream": False, "options": {"num_predict": 2, "temperature": 0}}
    with host.client() as c:
        assert c.post("/api/copy", json={"source": "tiny", "destination": "twin"}).status_code == 200
        variant = {"model": "pirate", "modelfile": "FROM tiny\nSYSTEM You are a pirate.\n"}
        assert c.post("/api/create", json={**variant, "stream": False}).status_code == 200
        first = c.post("/api/generate", json={"model": "tiny", **gen}).json()
        twin = c.post("/api/generate", json={"model": "twin", **gen}).json()
        pirate = c.post("/api/generate", json={"model": "pirate", **gen}).json()
        assert first["load_duration"] > 0 and twin["load_duration"] == 0 and pirate["load_duration"] == 0
        assert twin["response"] == first["response"]
        assert pirate["prompt_eval_count"] > first["prompt_eval_count"]  # its system message, not tiny's
        engines = {id(r.mold) for r in scheduler.runners.values()}
        assert len(engines) == 1 and len(scheduler.runners) == 3
        assert scheduler.held_bytes() == scheduler.runners[next(iter(scheduler.runners))].size
        ps = {m["name"] for m in c.get("/api/ps").json()["models"]}
        assert ps == {"tiny:latest", "twin:latest", "pirate:latest"}
        mold = scheduler.runners[next(iter(scheduler.runners))].mold
        for name in ("tiny", "twin"):
            assert c.post("/api/generate", json={"model": name, "keep_alive": 0}).status_code == 200
        assert mold.is_loaded() and len(scheduler.runners) == 1  # pirate still holds it
        again = c.post("/api/generate", json={"model": "pirate", **gen}).json()
        assert again["load_duration"] == 0
        wider = {**gen, "options": {**gen["options"], "num_ctx": 256}}
        assert c.post("/api/generate", json={"model": "twin", **wider}).json()["load_duration"] > 0
        assert len({id(r.mold) for r in scheduler.runners.values()}) == 2
        assert c.post("/api/generate", json={"model": "pirate", "keep_alive": 0}).status_code == 200
        assert not mold.is_loaded()


def test_kv_prefix_reuse_keeps_greedy_output_identical(host: Host) -> None:
    msgs = [{"role": "user", "content": "the cat"}]
    body = {
        "model": "tiny",
        "messages": msgs,
        "stream": False,
        "options": {"num_predict": 8, "temperature": 0},
    }
    with host.client() as c:
        cold = c.post("/api/chat", json=body).json()
        c.post(
            "/api/generate",
            json={
                "model": "tiny",
                "prompt": "something else",
                "stream": False,
                "options": {"num_predict": 4},
            },
        )
        warm = c.post("/api/chat", json=body).json()
        repeat = c.post("/api/chat", json=body).json()
    assert cold["message"]["content"] == warm["message"]["content"] == repeat["message"]["content"]


def test_a_prompt_that_fills_the_batch_leaves_the_next_slots_stream_intact(tiny_gguf: Path) -> None:
    """A long prompt in slot 0 fills whole batches, so slot 1's stream sits some llama_decode calls
    out: it must wait, not sample again from where its token sat in the previous batch (a row with
    no logits now: 'NULL pointer access', or another request's)."""
    from ferrousforge.generation import GenerationInput
    from ferrousforge.mold import ModelSpec
    from ferrousforge.options import Options
    from ferrousforge_host.engines.llamacpp import LlamaCppMold

    opts = Options.parse({"num_parallel": 2, "num_batch": 16, "num_thread": 1, "temperature": 0})

    def request(prompt: str, n: int) -> GenerationInput:
        return GenerationInput(prompt, dataclasses.replace(opts, num_predict=n))

    mold = LlamaCppMold(ModelSpec("tiny", "gguf", str(tiny_gguf)), opts)
    mold.load_sync()
    try:
        solo = "".join(c.text for c in mold.stream_sync(request("one of the", 300)))
        holder = mold.stream_sync(request("the", 1000))
        next(holder)  # generating in slot 0
        stream = mold.stream_sync(request("one of the", 300))
        first = next(stream)  # slot 1
        holder.close()  # slot 0 frees for the long prompt
        long_prompt = " ".join(["it was not the cat and they are at"] * 12)
        with ThreadPoolExecutor(1) as pool:
            other = pool.submit(lambda: [c for c in mold.stream_sync(request(long_prompt, 20))])
            text = first.text + "".join(c.text for c in stream)
            assert other.result()[-1].done
        assert text == solo
    finally:
        mold.unload_sync()


def test_a_model_made_anew_under_its_name_is_read_anew(host: Host) -> None:
    """A request reads a model's manifest once per change (a stat, otherwise): re-creating the name
    with another system prompt and parameters is what the next request runs, and removing it is a 404."""
    app = host.app
    scheduler = app.state.scheduler  # type: ignore[attr-defined]
    from ferrousforge.names import ModelName

    name = ModelName.parse("mine")
    with host.client() as c:
        for system, num_ctx in (("be brief", 256), ("be thorough", 512)):
            made = c.post(
                "/api/create",
                json={"model": "mine", "from": "tiny", "system": system, "parameters": {"num_ctx": num_ctx}},
            )
            assert made.status_code == 200, made.text
            spec, _ = scheduler.spec(name)
            assert spec.system == system and spec.parameters["num_ctx"] == num_ctx
            assert scheduler.spec(name)[0] is spec  # unchanged: the same spec, not read again
            r = c.post("/api/generate", json={"model": "mine", "prompt": "hi", "options": {"num_predict": 1}})
            assert r.status_code == 200, r.text
            (running,) = [m for m in c.get("/api/ps").json()["models"] if m["name"] == "mine:latest"]
            assert running["context_length"] == num_ctx
        assert c.request("DELETE", "/api/delete", json={"model": "mine"}).status_code == 200
        gone = c.post("/api/generate", json={"model": "mine", "prompt": "hi"})
        assert gone.status_code == 404
