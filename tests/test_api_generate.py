"""Ollama's generate and chat over real HTTP, on the tiny GGUF model."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from conftest import Host


def lines(response) -> list[dict]:  # type: ignore[no-untyped-def]
    return [json.loads(x) for x in response.text.splitlines() if x.strip()]


def test_generate_streams_ndjson_then_stats(host: Host) -> None:
    with host.client() as c:
        r = c.post(
            "/api/generate", json={"model": "tiny", "prompt": "hello the", "options": {"num_predict": 8}}
        )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    chunks = lines(r)
    assert all(not ch["done"] for ch in chunks[:-1]) and chunks[-1]["done"]
    final = chunks[-1]
    assert final["done_reason"] == "length"
    assert final["eval_count"] == 8
    for key in (
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_duration",
    ):
        assert isinstance(final[key], int) and final[key] >= 0
    assert final["prompt_eval_count"] > 2
    assert final["model"] == "tiny:latest"
    assert isinstance(final["context"], list) and len(final["context"]) >= final["prompt_eval_count"]


def test_generate_non_stream_equals_stream_when_greedy(host: Host) -> None:
    body = {"model": "tiny", "prompt": "the cat is", "options": {"temperature": 0, "num_predict": 12}}
    with host.client() as c:
        whole = c.post("/api/generate", json={**body, "stream": False}).json()
        streamed = lines(c.post("/api/generate", json=body))
    assert whole["done"] is True
    assert whole["response"] == "".join(ch["response"] for ch in streamed)
    assert whole["eval_count"] == 12


def test_seeded_sampling_is_reproducible(host: Host) -> None:
    body = {
        "model": "tiny",
        "prompt": "one",
        "stream": False,
        "options": {"temperature": 1.0, "seed": 42, "num_predict": 16},
    }
    with host.client() as c:
        a = c.post("/api/generate", json=body).json()["response"]
        b = c.post("/api/generate", json=body).json()["response"]
        other = c.post("/api/generate", json={**body, "options": {**body["options"], "seed": 7}}).json()
    assert a == b
    assert other["response"] != a


def test_stop_string_ends_generation(host: Host) -> None:
    body = {
        "model": "tiny",
        "prompt": "hello",
        "stream": False,
        "options": {"temperature": 0, "num_predict": 40},
    }
    with host.client() as c:
        full = c.post("/api/generate", json=body).json()["response"]
        stop = full[5:8]
        cut = c.post("/api/generate", json={**body, "options": {**body["options"], "stop": [stop]}}).json()
    assert cut["done_reason"] == "stop"
    assert cut["response"] == full[: full.index(stop)]


def test_chat_uses_the_ggufs_template_and_streams_messages(host: Host) -> None:
    with host.client() as c:
        show = c.post("/api/show", json={"model": "tiny"}).json()
        assert "<|im_start|>" in show["template"]
        r = c.post(
            "/api/chat",
            json={
                "model": "tiny",
                "messages": [{"role": "user", "content": "hi"}],
                "options": {"num_predict": 5},
            },
        )
    chunks = lines(r)
    assert chunks[0]["message"]["role"] == "assistant"
    assert chunks[-1]["done"] and chunks[-1]["eval_count"] == 5
    # The template wraps the message: more prompt tokens than "hi" plus BOS alone.
    assert chunks[-1]["prompt_eval_count"] > 6


def test_raw_generate_skips_the_template(host: Host) -> None:
    body = {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    with host.client() as c:
        templated = c.post("/api/generate", json=body).json()
        raw = c.post("/api/generate", json={**body, "raw": True}).json()
    assert raw["prompt_eval_count"] < templated["prompt_eval_count"]
    assert "context" not in raw


def test_json_format_produces_json(host: Host) -> None:
    body = {
        "model": "tiny",
        "prompt": "give json",
        "format": "json",
        "stream": False,
        "options": {"num_predict": 60, "seed": 3},
    }
    with host.client() as c:
        r = c.post("/api/generate", json=body).json()
    if r["done_reason"] == "stop":
        json.loads(r["response"])
    else:  # cut by num_predict: still a valid JSON prefix
        assert r["response"].lstrip()[:1] in ("{", "[", '"') or r["response"].strip()[:1].isdigit()


def test_empty_prompt_loads_and_keep_alive_zero_unloads(host: Host) -> None:
    with host.client() as c:
        assert c.get("/api/ps").json()["models"] == []
        r = c.post("/api/generate", json={"model": "tiny"}).json()
        assert r["done_reason"] == "load"
        ps = c.get("/api/ps").json()["models"]
        assert [m["name"] for m in ps] == ["tiny:latest"]
        assert ps[0]["expires_at"] > "2000"
        r = c.post("/api/generate", json={"model": "tiny", "keep_alive": 0}).json()
        assert r["done_reason"] == "unload"
        assert c.get("/api/ps").json()["models"] == []


def test_negative_keep_alive_keeps_forever(host: Host) -> None:
    with host.client() as c:
        c.post("/api/generate", json={"model": "tiny", "keep_alive": -1})
        ps = c.get("/api/ps").json()["models"]
    assert int(ps[0]["expires_at"][:4]) > 2200  # Ollama's "Forever": now + the largest Go duration


def test_keep_alive_zero_on_a_request_unloads_after_it(host: Host) -> None:
    import time

    with host.client() as c:
        r = c.post(
            "/api/generate",
            json={
                "model": "tiny",
                "prompt": "a",
                "keep_alive": "0s",
                "stream": False,
                "options": {"num_predict": 2},
            },
        )
        assert r.status_code == 200
        for _ in range(50):
            if not c.get("/api/ps").json()["models"]:
                break
            time.sleep(0.02)
        assert c.get("/api/ps").json()["models"] == []


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"model": "missing", "prompt": "x"}, 404, "not found, try pulling it first"),
        ({"model": "tiny", "prompt": 5}, 400, "'prompt' must be a string"),
        ({"model": "tiny", "prompt": "x", "options": {"num_predict": "ten"}}, 400, "integer"),
        ({"model": "tiny", "prompt": "x", "images": ["aGk="]}, 400, "lacks the 'vision' capability"),
        ({"model": "tiny", "prompt": "x", "think": "maybe"}, 400, "'think' must be"),
        ({"model": "tiny", "prompt": "x", "think": True}, 400, "does not support thinking"),
        ({"model": "tiny", "prompt": "x", "top_logprobs": 21}, 400, "between 0 and 20"),
        ({"model": "tiny", "prompt": "x", "suffix": "y"}, 400, "does not support insert"),
        ({"model": "tiny", "prompt": "x", "truncate": "no"}, 400, "boolean"),
        ({"model": "tiny", "prompt": "x", "keep_alive": "soon"}, 400, "keep_alive"),
        ({"model": "tiny", "prompt": "x", "format": "yaml"}, 400, "format"),
        ({"model": "../../etc/passwd", "prompt": "x"}, 400, "invalid model name"),
        ({"model": "/abs/path", "prompt": "x"}, 400, "invalid model name"),
        ({"model": "a" * 300, "prompt": "x"}, 400, "longer than"),
        ({"prompt": "x"}, 400, "required"),
        ({"model": "tiny", "prompt": "x", "stream": "yes"}, 400, "boolean"),
        ({"model": "tiny", "template": "{{ range .Messages }}{{ end", "prompt": "x"}, 400, "template"),
    ],
)
def test_bad_generate_requests_get_clear_4xx(host: Host, body: dict, status: int, needle: str) -> None:
    with host.client() as c:
        r = c.post("/api/generate", json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]


def test_options_out_of_range_or_unknown_are_ignored_as_ollama_does(host: Host) -> None:
    """Ollama logs and ignores these; a wrong type stays a 400 (above)."""
    with host.client() as c:
        plain = c.post(
            "/api/generate",
            json={
                "model": "tiny",
                "prompt": "x",
                "stream": False,
                "options": {"temperature": 0, "num_predict": 6},
            },
        ).json()
        for odd in (
            {"top_p": 2},
            {"temperature": -1},
            {"bogus": 1},
            {"num_ctx": 10**9},
            {"repeat_penalty": 1e9},
        ):
            options = {"temperature": 0, "num_predict": 6, **odd}
            r = c.post(
                "/api/generate", json={"model": "tiny", "prompt": "x", "stream": False, "options": options}
            )
            assert r.status_code == 200, r.text
            if "temperature" not in odd:
                assert r.json()["response"] == plain["response"]  # the odd value had no effect


def test_bad_chat_requests(host: Host) -> None:
    with host.client() as c:
        bad_role = c.post(
            "/api/chat", json={"model": "tiny", "messages": [{"role": "robot", "content": "x"}]}
        )
        not_list = c.post("/api/chat", json={"model": "tiny", "messages": "hi"})
        tools = c.post(
            "/api/chat",
            json={
                "model": "tiny",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"parameters": {}}}],
            },
        )
    assert bad_role.status_code == 400 and "role" in bad_role.json()["error"]
    assert not_list.status_code == 400
    assert tools.status_code == 400 and "tools[0]" in tools.json()["error"]


def test_malformed_json_and_oversized_bodies(host: Host) -> None:
    with host.client() as c:
        r = c.post("/api/generate", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "invalid JSON" in r.json()["error"]
        r = c.post("/api/generate", content=b"[1, 2]")
        assert r.status_code == 400
        big = b'{"model": "tiny", "prompt": "' + b"a" * (17 * 1024 * 1024) + b'"}'
        r = c.post("/api/generate", content=big)
        assert r.status_code == 413
        assert c.get("/").status_code == 200


def test_prompt_longer_than_context_truncates_unless_told_not_to(host: Host) -> None:
    body = {"model": "tiny", "prompt": "the " * 2100, "options": {"num_predict": 2}}
    with host.client() as c:
        refused = c.post("/api/generate", json={**body, "truncate": False})
        cut = c.post("/api/generate", json={**body, "stream": False}).json()
    assert refused.status_code == 400
    assert "context window" in refused.json()["error"]
    assert cut["done"] and 2000 < cut["prompt_eval_count"] < 2048  # the window of the tiny model
    assert cut["context"][:2] == [1, 3]  # the first num_keep tokens stay: BOS and the chat's start
    huge = {"model": "tiny", "prompt": "the of and " * 400_000, "options": {"num_predict": 1}}  # 4.4 MB
    with host.client(timeout=60) as c:  # cut before tokenizing: as quick as a prompt that fills the window
        assert c.post("/api/generate", json={**huge, "truncate": False}).status_code == 400
        assert c.post("/api/generate", json={**huge, "stream": False}).json()["prompt_eval_count"] < 2048


def test_chat_longer_than_the_window_drops_its_oldest_turns(host: Host) -> None:
    turns = []
    for i in range(24):
        turns.append({"role": "user", "content": f"question {i} " + "the of and to " * 6})
        turns.append({"role": "assistant", "content": "in is that for " * 6})
    turns.append({"role": "user", "content": "last question"})
    system = {"role": "system", "content": "be brief"}
    options = {"num_ctx": 256, "num_predict": 3, "temperature": 0}  # llama.cpp's smallest window
    with host.client() as c:
        whole = c.post(
            "/api/chat",
            json={
                "model": "tiny",
                "messages": [system, *turns],
                "stream": False,
                "options": {"num_ctx": 2048},
            },
        ).json()
        fitted = c.post(
            "/api/chat",
            json={"model": "tiny", "messages": [system, *turns], "stream": False, "options": options},
        ).json()
        last_two = c.post(
            "/api/chat",
            json={"model": "tiny", "messages": [system, *turns[-3:]], "stream": False, "options": options},
        ).json()
        refused = c.post(
            "/api/chat",
            json={"model": "tiny", "messages": [system, *turns], "truncate": False, "options": options},
        )
    assert whole["prompt_eval_count"] > 800
    assert last_two["prompt_eval_count"] <= fitted["prompt_eval_count"] < 256
    assert refused.status_code == 400 and "context window" in refused.json()["error"]


def test_generation_past_the_window_shifts_it_unless_told_not_to(host: Host) -> None:
    body = {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_ctx": 256, "num_predict": 400}}
    with host.client() as c:
        shifted = c.post("/api/generate", json=body).json()
        stopped = c.post("/api/generate", json={**body, "shift": False}).json()
    assert shifted["eval_count"] == 400 and shifted["done_reason"] == "length"
    assert stopped["done_reason"] == "length"
    assert stopped["prompt_eval_count"] + stopped["eval_count"] == 256


def test_template_and_system_override(host: Host) -> None:
    body = {"model": "tiny", "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    with host.client() as c:
        base = c.post("/api/generate", json=body).json()
        go = c.post(
            "/api/generate",
            json={
                **body,
                "system": "be brief",
                "template": "{{ if .System }}{{ .System }} {{ end }}{{ .Prompt }}",
            },
        ).json()
    # "be brief hi" vs the chat template around "hi": different prompt token counts
    assert go["prompt_eval_count"] != base["prompt_eval_count"]
    assert go["done"] is True


def test_continuing_from_context(host: Host) -> None:
    with host.client() as c:
        first = c.post(
            "/api/generate",
            json={
                "model": "tiny",
                "prompt": "the",
                "stream": False,
                "options": {"num_predict": 3, "temperature": 0},
            },
        ).json()
        second = c.post(
            "/api/generate",
            json={
                "model": "tiny",
                "prompt": "and",
                "context": first["context"],
                "stream": False,
                "options": {"num_predict": 3},
            },
        ).json()
    assert second["context"][: len(first["context"])] == first["context"]
    with host.client() as c:
        bad = c.post("/api/generate", json={"model": "tiny", "context": [1, 10**9], "prompt": "x"})
    assert bad.status_code == 400 and "vocabulary" in bad.json()["error"]


@pytest.mark.parametrize("path", ["/api/generate", "/v1/completions"])
def test_a_client_that_leaves_a_whole_answer_cancels_it(host: Host, path: str) -> None:
    """A ``stream: false`` generation whose client goes away stops, as Ollama's does: its slot is free
    again at once and the access counts it as 499, instead of decoding for nobody to its end."""
    # ~16,000 tokens, the window shifting (greedy: the tiny model's end token never wins): ~12 s here
    body: dict[str, object] = {
        "model": "tiny",
        "prompt": "hi",
        "stream": False,
        "temperature": 0,
        "max_tokens": 10**6,
    }
    body["options"] = {"num_predict": 10**6, "num_ctx": 2048, "temperature": 0}
    scheduler = host.app.state.scheduler  # type: ignore[attr-defined]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(host.url + path, json=body, timeout=1)
    deadline = time.time() + 3
    while scheduler.in_flight and time.time() < deadline:
        time.sleep(0.02)
    assert scheduler.in_flight == 0
    counted = host.app.state.metrics.requests.labels("POST", path, "499")  # type: ignore[attr-defined]
    assert counted._value.get() == 1


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_several_choices_cancels_them_all(host: Host, stream: bool) -> None:
    """``n`` choices, whole or streamed: a client that goes away stops every one of them."""
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "n": 3,
        "stream": stream,
        "temperature": 0,
        "max_tokens": 16_000,
    }
    scheduler = host.app.state.scheduler  # type: ignore[attr-defined]
    if stream:
        with httpx.stream("POST", host.url + "/v1/chat/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()  # (read from, never left: leaving the loop would close the stream)
            indices: set[int] = set()
            while len(indices) < 3:
                line = next(lines)
                if line.startswith("data: {"):
                    indices |= {c["index"] for c in json.loads(line[6:])["choices"]}
            assert scheduler.in_flight == 3  # all three generating, the client still there
    else:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(host.url + "/v1/chat/completions", json=body, timeout=1)
    deadline = time.time() + 3
    while scheduler.in_flight and time.time() < deadline:
        time.sleep(0.02)
    assert scheduler.in_flight == 0


def test_num_predict_zero_evaluates_the_prompt_and_says_nothing(host: Host) -> None:
    """As the wgpu engine and llama-server: no token at all (it was one on llama.cpp)."""
    body = {"model": "tiny", "prompt": "the cat", "stream": False, "options": {"num_predict": 0}}
    with host.client() as c:
        r = c.post("/api/generate", json=body).json()
    assert r["response"] == "" and r["eval_count"] == 0 and r["done_reason"] == "length"
    assert r["prompt_eval_count"] > 0
