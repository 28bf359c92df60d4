"""What Ollama and OpenAI clients rely on beyond the basics: thinking, logprobs, several tool calls per
reply streamed as they complete, fill-in-the-middle, format with tools, ids of tool calls, through the
unmodified ``ollama``, ``openai`` and LangChain clients."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest

from conftest import Host, start_host
from tinymodel import THINKING_CHATML, write_tiny_llama

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
                "required": ["city"],
            },
        },
    }
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dropin-models")
    return {
        "thinker": write_tiny_llama(root / "thinker.gguf", seed=2, chat_template=THINKING_CHATML),
        "coder": write_tiny_llama(root / "coder.gguf", seed=3, fim=True),
        "plain": write_tiny_llama(root / "plain.gguf", seed=4, chat_template=None),
    }


@pytest.fixture(scope="module")
def dropin(tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path]) -> Iterator[Host]:
    for h in start_host(tmp_path_factory.mktemp("dropin") / "store"):
        for name, path in models.items():
            h.pull_file(name, path)
        yield h


def test_thinking_goes_to_its_own_field_in_both_dialects(dropin: Host) -> None:
    client = ollama.Client(host=dropin.url)
    shown = client.show("thinker")
    assert "thinking" in (shown.capabilities or [])
    options = {"num_predict": 12, "temperature": 0}
    thought = client.chat(
        model="thinker", messages=[{"role": "user", "content": "hi"}], think=True, options=options
    )
    # the prompt opened <think> and the tiny model never closes it: everything it said is thinking
    assert thought.message.thinking and thought.message.content == ""
    plain = client.chat(
        model="thinker", messages=[{"role": "user", "content": "hi"}], think=False, options=options
    )
    assert not plain.message.thinking and plain.message.content
    streamed = list(
        client.chat(
            model="thinker",
            messages=[{"role": "user", "content": "hi"}],
            think="high",
            options=options,
            stream=True,
        )
    )
    assert "".join(c.message.thinking or "" for c in streamed) == thought.message.thinking
    oa = openai.OpenAI(base_url=f"{dropin.url}/v1", api_key="x")
    reply = oa.chat.completions.create(
        model="thinker",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=12,
        temperature=0,
        reasoning_effort="low",
    )
    assert reply.choices[0].message.model_extra["reasoning"] == thought.message.thinking
    with pytest.raises(ollama.ResponseError, match="does not support thinking"):
        client.chat(model="plain", messages=[{"role": "user", "content": "hi"}], think=True)


def test_logprobs_match_the_sampler_in_both_dialects(dropin: Host) -> None:
    client = ollama.Client(host=dropin.url)
    r = client.generate(
        model="plain",
        prompt="the",
        options={"num_predict": 8, "temperature": 0},
        logprobs=True,
        top_logprobs=3,
    )
    entries = r.logprobs or []
    assert len(entries) == r.eval_count == 8
    assert "".join(e.token for e in entries) == r.response
    for e in entries:  # greedy: the chosen token is the most likely one
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        assert e.top_logprobs[0].token == e.token and e.top_logprobs[0].logprob == pytest.approx(e.logprob)
        assert e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob
    oa = openai.OpenAI(base_url=f"{dropin.url}/v1", api_key="x")
    chat = oa.chat.completions.create(
        model="coder",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    content = chat.choices[0].logprobs.content
    assert len(content) == 5 and all(c.top_logprobs[0].token == c.token for c in content)
    stream = oa.chat.completions.create(
        model="coder",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=5,
        temperature=0,
        logprobs=True,
        stream=True,
    )
    streamed = [
        c
        for chunk in stream
        if chunk.choices and chunk.choices[0].logprobs
        for c in chunk.choices[0].logprobs.content
    ]
    assert [c.token for c in streamed] == [c.token for c in content]
    legacy = oa.completions.create(model="plain", prompt="the", max_tokens=4, temperature=0, logprobs=2)
    lp = legacy.choices[0].logprobs
    assert len(lp.tokens) == 4 and "".join(lp.tokens) == legacy.choices[0].text
    assert all(len(alts) == 2 for alts in lp.top_logprobs)


def test_several_tool_calls_in_one_reply_are_streamed_as_they_complete(dropin: Host) -> None:
    client = ollama.Client(host=dropin.url)
    messages = [{"role": "user", "content": "weather in Paris and Oslo?"}]
    chunks = list(
        client.chat(
            model="plain",
            messages=messages,
            tools=TOOLS,
            stream=True,
            options={"num_predict": 60, "seed": 1},
            # Ollama's client has no tool_choice; the OpenAI dialect below forces calls
        )
    )
    assert chunks[-1].done
    oa = openai.OpenAI(base_url=f"{dropin.url}/v1", api_key="x")
    request: dict[str, Any] = {
        "model": "plain",
        "messages": messages,
        "tools": TOOLS,
        "tool_choice": "required",
        "max_tokens": 200,
        "temperature": 2,  # OpenAI's most: after each call the grammar allows a newline (a call) or the end
        "top_p": 1,
    }
    for seed in range(8):  # whether another call follows is a draw: the first seed whose reply has two
        events = list(oa.chat.completions.create(**request, seed=seed, stream=True))
        with_calls = [i for i, e in enumerate(events) if e.choices and e.choices[0].delta.tool_calls]
        calls = [tc for i in with_calls for tc in events[i].choices[0].delta.tool_calls]
        if len(calls) >= 2:
            break
    assert len(calls) >= 2, "the grammar allows one call per line; the tiny model goes on calling"
    assert with_calls[0] < len(events) - 2  # the first call came before the reply ended
    assert [c.index for c in calls] == list(range(len(calls)))
    assert all(
        c.function.name == "get_weather" and json.loads(c.function.arguments)["city"] in ("Paris", "Oslo")
        for c in calls
    )
    assert len({c.id for c in calls}) == len(calls)
    assert (
        events[-1].choices[0].finish_reason == "tool_calls"
        or events[-2].choices[0].finish_reason == "tool_calls"
    )
    whole = oa.chat.completions.create(**request, seed=seed)  # the same draws, not streamed
    assert [c.function.arguments for c in whole.choices[0].message.tool_calls] == [
        c.function.arguments for c in calls
    ]
    # the ids come back with the results, and the conversation goes on
    follow = oa.chat.completions.create(
        model="plain",
        messages=[
            *messages,
            whole.choices[0].message.model_dump(exclude_none=True),
            *[
                {"role": "tool", "tool_call_id": c.id, "content": '{"temp": 20}'}
                for c in whole.choices[0].message.tool_calls
            ],
        ],
        tools=TOOLS,
        max_tokens=4,
    )
    assert follow.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_tools_with_format_answer_a_call_or_the_format(dropin: Host) -> None:
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"]}
    with dropin.client() as c:
        r = c.post(
            "/api/chat",
            json={
                "model": "plain",
                "messages": [{"role": "user", "content": "hi"}],
                "tools": TOOLS,
                "format": schema,
                "stream": False,
                "options": {"num_predict": 80, "seed": 5},
            },
        )
    assert r.status_code == 200, r.text
    message = r.json()["message"]
    if message.get("tool_calls"):
        assert message["tool_calls"][0]["function"]["name"] == "get_weather"
    else:
        assert "answer" in json.loads(message["content"])


def test_fill_in_the_middle_with_suffix(dropin: Host) -> None:
    client = ollama.Client(host=dropin.url)
    assert "insert" in (client.show("coder").capabilities or [])
    assert "insert" not in (client.show("plain").capabilities or [])
    options = {"num_predict": 6, "temperature": 0}
    middle = client.generate(model="coder", prompt="def f(", suffix="    return x", options=options)
    prefix_only = client.generate(model="coder", prompt="def f(", options=options, raw=True)
    assert middle.response and middle.prompt_eval_count > prefix_only.prompt_eval_count
    oa = openai.OpenAI(base_url=f"{dropin.url}/v1", api_key="x")
    legacy = oa.completions.create(
        model="coder", prompt="def f(", suffix="    return x", max_tokens=6, temperature=0
    )
    assert legacy.choices[0].text == middle.response
    with pytest.raises(openai.BadRequestError, match="does not support insert"):
        oa.completions.create(model="plain", prompt="a", suffix="b", max_tokens=2)


def test_langchain_chat_ollama_with_reasoning_and_tools(dropin: Host) -> None:
    from langchain_ollama import ChatOllama

    llm = ChatOllama(model="thinker", base_url=dropin.url, reasoning=True, num_predict=10, temperature=0)
    reply = llm.invoke("hi")
    assert reply.additional_kwargs.get("reasoning_content")
    # parallel calls: the tiny model, sampled hot with this seed, starts its reply with a call and then
    # writes more (the grammar allows a call per line); ChatOllama has no tool_choice to force one
    tooled = ChatOllama(model="plain", base_url=dropin.url, num_predict=300, seed=11, temperature=3)
    out = tooled.bind_tools([TOOLS[0]]).invoke("weather in Paris and Oslo?")
    assert len(out.tool_calls) >= 2
    for call in out.tool_calls:
        assert call["name"] == "get_weather" and call["args"]["city"] in ("Paris", "Oslo") and call["id"]
    assert len({c["id"] for c in out.tool_calls}) == len(out.tool_calls)


def test_show_verbose_tensors_arrays_and_ps_forever(dropin: Host) -> None:
    with dropin.client() as c:
        brief = c.post("/api/show", json={"model": "plain"}).json()
        full = c.post("/api/show", json={"model": "plain", "verbose": True}).json()
        c.post("/api/generate", json={"model": "plain", "keep_alive": -1})
        ps = c.get("/api/ps").json()["models"]
        c.post("/api/generate", json={"model": "plain", "keep_alive": 0})
    assert brief["model_info"]["tokenizer.ggml.tokens"] is None  # long arrays: null, as Ollama
    assert "tensors" not in brief
    tokens = full["model_info"]["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list) and tokens[:3] == ["<unk>", "<s>", "</s>"]
    by_name = {t["name"]: t for t in full["tensors"]}
    assert by_name["token_embd.weight"]["type"] == "F32" and by_name["token_embd.weight"]["shape"][0] == 64
    assert full["model_info"]["llama.block_count"] == 2
    forever = next(m for m in ps if m["name"] == "plain:latest")["expires_at"]
    assert int(forever[:4]) > 2200  # "Forever" in `ollama ps`, not "Stopping..."
