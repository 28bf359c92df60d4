"""Anthropic's Messages API (/v1/messages) with the official ``anthropic`` client, unmodified,
against a real host and a tiny GGUF: text, streaming, tool round trips, token counting, errors."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import anthropic
import httpx
import pytest
from test_openai import TOOLS as OPENAI_TOOLS
from test_responses_api import two_calls_last

from conftest import Host, runner_pid, start_host
from tinymodel import THINKING_CHATML, write_tiny_llama

TOOLS = [  # Anthropic's form
    {"name": f["name"], "description": f["description"], "input_schema": f["parameters"]}
    for f in (tool["function"] for tool in OPENAI_TOOLS)
]
HELLO = [{"role": "user", "content": "hello"}]
GREEDY = {"temperature": 0}  # sampling fields this client no longer names travel in extra_body


@pytest.fixture
def client(host: Host) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=host.url, api_key="x", max_retries=0)


def test_message_whole_and_streamed(client: anthropic.Anthropic) -> None:
    whole = client.messages.create(
        model="tiny",
        max_tokens=8,
        system="be brief",
        messages=HELLO,
        extra_body=GREEDY,
    )
    assert whole.id.startswith("msg_") and whole.type == "message" and whole.role == "assistant"
    assert whole.stop_reason == "max_tokens" and whole.stop_sequence is None
    [block] = whole.content
    assert block.type == "text" and block.text
    assert whole.usage.output_tokens == 8 and whole.usage.input_tokens > 5

    with client.messages.stream(
        model="tiny",
        max_tokens=8,
        system="be brief",
        messages=HELLO,
        extra_body=GREEDY,
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == block.text
    assert final.stop_reason == "max_tokens" and final.content[0].text == text
    assert final.usage.output_tokens == 8 and final.usage.input_tokens == whole.usage.input_tokens


def test_sse_events_are_named_as_anthropic_sends_them(host: Host) -> None:
    body = {"model": "tiny", "max_tokens": 3, "messages": HELLO, "stream": True}
    with httpx.Client(base_url=host.url) as c:
        r = c.post("/v1/messages", json=body)
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = [f.split("\n") for f in r.text.split("\n\n") if f]
    names = [f[0].removeprefix("event: ") for f in frames]
    datas = [json.loads(f[1].removeprefix("data: ")) for f in frames]
    assert all(d["type"] == n for n, d in zip(names, datas, strict=True))
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert datas[-2]["delta"]["stop_reason"] == "max_tokens" and datas[-2]["usage"]["output_tokens"] == 3


def test_stop_sequences_cut_the_text(client: anthropic.Anthropic) -> None:
    full = client.messages.create(model="tiny", max_tokens=20, messages=HELLO, extra_body=GREEDY)
    text = full.content[0].text
    stop = text[4:7]
    cut = client.messages.create(
        model="tiny",
        max_tokens=20,
        messages=HELLO,
        stop_sequences=[stop],
        extra_body=GREEDY,
    )
    assert cut.stop_reason in ("end_turn", "stop_sequence")
    assert cut.content[0].text == text[: text.index(stop)]


def check_call(name: str, args: object) -> None:
    assert isinstance(args, dict)
    if name == "get_weather":
        assert set(args) == {"city", "unit"} and args["unit"] in ("C", "F")
    else:
        assert name == "add" and isinstance(args["a"], int) and isinstance(args["b"], int)


def test_forced_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    """A random model still makes well-formed calls (one or more): generation is constrained by the
    schema. Greedy decoding keeps it the same on every run."""
    asked = [{"role": "user", "content": "weather in Paris?"}]
    r = client.messages.create(
        model="tiny",
        max_tokens=400,
        messages=asked,
        tools=TOOLS,
        tool_choice={"type": "any"},
        extra_body=GREEDY,
    )
    assert r.stop_reason == "tool_use" and r.content
    for use in r.content:
        assert use.type == "tool_use" and use.id.startswith("toolu_")
        check_call(use.name, use.input)

    turns = [
        *asked,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": ""},
                *(use.model_dump() for use in r.content),
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": use.id, "content": '{"temp": 21}'} for use in r.content
            ],
        },
    ]
    follow, short = (
        client.messages.create(model="tiny", max_tokens=4, messages=given, tools=TOOLS)
        for given in (turns, asked)
    )
    assert follow.usage.input_tokens > short.usage.input_tokens + 10
    assert follow.content[0].type == "text"

    named = client.messages.create(
        model="tiny",
        max_tokens=400,
        messages=asked,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "add"},
        extra_body=GREEDY,
    )
    assert named.content and all(b.type == "tool_use" and b.name == "add" for b in named.content)
    check_call("add", named.content[0].input)
    none = client.messages.create(
        model="tiny",
        max_tokens=4,
        messages=asked,
        tools=TOOLS,
        tool_choice={"type": "none"},
    )
    assert none.content[0].type == "text" and none.stop_reason == "max_tokens"


def test_streamed_tool_use_is_parsed_by_the_client(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="tiny",
        max_tokens=400,
        messages=[{"role": "user", "content": "add 2 and 3"}],
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "add"},
        extra_body=GREEDY,
    ) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "input_json" in kinds and final.stop_reason == "tool_use" and final.content
    for use in final.content:
        assert use.type == "tool_use" and use.name == "add"
        check_call("add", use.input)


def test_structured_output_and_count_tokens(client: anthropic.Anthropic) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    schema["additionalProperties"] = False
    r = client.messages.create(
        model="tiny",
        max_tokens=40,
        messages=[{"role": "user", "content": "ok?"}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    assert r.stop_reason == "end_turn"
    assert isinstance(json.loads(r.content[0].text)["ok"], bool)
    counted = client.messages.count_tokens(model="tiny", messages=HELLO, system="be brief")
    used = client.messages.create(model="tiny", max_tokens=1, messages=HELLO, system="be brief")
    assert counted.input_tokens == used.usage.input_tokens > 5
    # fields count_tokens does not take (sampling, stream) are not its business, whatever they hold
    odd = {"top_p": {"x": []}, "temperature": "hot", "stream": "yes", "stop_sequences": 3}
    again = client.messages.count_tokens(model="tiny", messages=HELLO, system="be brief", extra_body=odd)
    assert again.input_tokens == counted.input_tokens


def test_count_tokens_counts_past_the_window(client: anthropic.Anthropic, tiny_gguf: Path) -> None:
    """A prompt longer than the context window is counted whole (a reply's would be cut to fit), in
    pieces: within a token a piece of llama.cpp's count of the whole text."""
    from llama_cpp import Llama

    text = "the cat sat on the mat " * 1200  # ~7000 tokens, 2 pieces; num_ctx 4096
    counted = client.messages.count_tokens(
        model="tiny", messages=[{"role": "user", "content": text}]
    ).input_tokens
    short = client.messages.count_tokens(model="tiny", messages=HELLO).input_tokens
    assert counted > 6000 > 100 > short
    vocab = Llama(model_path=str(tiny_gguf), vocab_only=True, verbose=False)
    prompt = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    assert abs(counted - len(vocab.tokenize(prompt.encode(), add_bos=True, special=True))) <= 2


def test_a_prefill_is_continued_and_a_cut_call_is_max_tokens(client: anthropic.Anthropic, host: Host) -> None:
    """A final assistant message is continued (the prompt ends inside it); a required call that
    max_tokens cuts short is no text block; disable_parallel_tool_use gives one call."""
    prefilled = [*HELLO, {"role": "assistant", "content": "The answer is"}]
    r = client.messages.create(model="tiny", max_tokens=6, messages=prefilled, extra_body=GREEDY)
    prompt = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\nThe answer is"
    with host.client() as c:
        body = {
            "model": "tiny",
            "prompt": prompt,
            "raw": True,
            "stream": False,
            "options": {**GREEDY, "num_predict": 6},
        }
        raw = c.post("/api/generate", json=body).json()
    assert r.content[0].text == raw["response"] and r.usage.input_tokens == raw["prompt_eval_count"]  # type: ignore[union-attr]
    asked = [{"role": "user", "content": "weather in Paris?"}]
    cut = client.messages.create(
        model="tiny",
        max_tokens=6,
        messages=asked,
        tools=TOOLS,
        tool_choice={"type": "any"},
        extra_body=GREEDY,
    )
    assert cut.stop_reason == "max_tokens" and cut.content == []  # no half-written call as text
    one = client.messages.create(
        model="tiny",
        max_tokens=400,
        messages=asked,
        tools=TOOLS,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        extra_body=GREEDY,
    )
    assert one.stop_reason == "tool_use" and [b.type for b in one.content] == ["tool_use"]


def test_the_event_builder_follows_the_chunk_contract() -> None:
    """Thinking, text and several calls in one reply (what the producer will send) come out as
    thinking, text and tool_use blocks, each started and stopped in order."""
    from ferrousforge_host.anthropic.routes import _Message

    reply = _Message("m")
    chunks = [
        {"message": {"role": "assistant", "content": "", "thinking": "hm"}, "done": False},
        {"message": {"role": "assistant", "content": "Sure."}, "done": False},
        two_calls_last(),
    ]
    events = [e for c in chunks for e in reply.feed(c)]
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use", "tool_use"]
    assert [n for n, _ in events].count("content_block_stop") == 4
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use" and events[-1][0] == "message_stop"
    thinking, text, first, second = reply.whole()["content"]
    assert thinking == {"type": "thinking", "thinking": "hm", "signature": ""} and text["text"] == "Sure."
    assert first["id"].startswith("toolu_") and first["input"] == {"x": 1} and first["name"] == "a"
    assert second["id"].startswith("toolu_") and second["input"] == {} and second["id"] != first["id"]


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
BAD = [
    ({"messages": HELLO}, "'max_tokens' is required"),
    ({"max_tokens": 0, "messages": HELLO}, "max_tokens"),
    ({"max_tokens": 5, "messages": []}, "must not be empty"),
    ({"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [IMAGE]}]}, "does not support images"),
    (
        {
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": [{**IMAGE, "source": {"type": "url", "url": "http://x"}}]}
            ],
        },
        "base64",
    ),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document"}]}]}, "content[0].type"),
    (
        {"max_tokens": 5, "messages": HELLO, "tools": [{"type": "web_search_20250305", "name": "w"}]},
        "tools[0]",
    ),
    (
        {"max_tokens": 5, "messages": HELLO, "tools": TOOLS, "tool_choice": {"type": "tool", "name": "x"}},
        "unknown",
    ),
    ({"max_tokens": 5, "messages": HELLO, "tool_choice": {"type": "maybe"}}, "tool_choice.type"),
    ({"max_tokens": 5, "messages": HELLO, "stop_sequences": "x"}, "stop_sequences"),
    ({"max_tokens": 5, "messages": HELLO, "thinking": {"type": "lots"}}, "thinking.type"),
    ({"max_tokens": 5, "messages": HELLO, "temperature": "hot"}, "temperature"),
    ({"max_tokens": 5, "messages": HELLO, "temperature": 1.5}, "0 to 1"),  # Anthropic's range
]


@pytest.mark.parametrize(("body", "needle"), BAD)
def test_bad_requests_get_anthropic_shaped_400s(host: Host, body: dict, needle: str) -> None:
    with httpx.Client(base_url=host.url) as c:
        r = c.post("/v1/messages", json={"model": "tiny", **body})
    assert r.status_code == 400, r.text
    reply = r.json()
    assert reply["type"] == "error" and reply["error"]["type"] == "invalid_request_error"
    assert needle in reply["error"]["message"]


def test_client_errors_are_typed(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="ghost", max_tokens=5, messages=HELLO)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError):
        client.messages.count_tokens(model="tiny", messages=[])


def test_api_keys_reach_the_server_as_the_client_sends_them(tmp_path: Path, tiny_gguf: Path) -> None:
    for host in start_host(tmp_path / "store", api_keys="sesame"):
        with httpx.Client(base_url=host.url, headers={"Authorization": "Bearer sesame"}) as c:
            pulled = c.post("/api/pull", json={"model": "tiny", "source": str(tiny_gguf), "stream": False})
            assert pulled.status_code == 200
        good = anthropic.Anthropic(base_url=host.url, api_key="sesame", max_retries=0)
        assert good.messages.create(model="tiny", max_tokens=2, messages=HELLO).usage.output_tokens == 2
        with pytest.raises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=host.url, api_key="wrong", max_retries=0).messages.create(
                model="tiny", max_tokens=2, messages=HELLO
            )


def test_a_runner_dying_mid_stream_ends_with_an_error_event(host: Host) -> None:
    body = {"model": "tiny", "max_tokens": 1500, "messages": HELLO, "stream": True, "temperature": 0.8}
    names: list[str] = []
    with host.client() as c, c.stream("POST", "/v1/messages", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: "):
                names.append(line[7:])
                if len(names) == 5:
                    os.kill(runner_pid(host), signal.SIGKILL)
            elif line.startswith("data: "):
                last = json.loads(line[6:])
    assert names[-1] == "error" and "message_stop" not in names
    assert last["type"] == "error" and last["error"]["type"] == "api_error"
    assert "runner process has terminated" in last["error"]["message"]


def test_thinking_comes_back_as_thinking_blocks(
    host: Host, client: anthropic.Anthropic, tmp_path: Path
) -> None:
    host.pull_file("thinker", write_tiny_llama(tmp_path / "thinker.gguf", chat_template=THINKING_CHATML))
    asked = {"model": "thinker", "max_tokens": 6, "messages": HELLO, "extra_body": GREEDY}
    thinking = {"type": "enabled", "budget_tokens": 1024}
    whole = client.messages.create(**asked, thinking=thinking)
    [block] = whole.content
    assert block.type == "thinking" and block.thinking and whole.stop_reason == "max_tokens"
    with client.messages.stream(**asked, thinking=thinking) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    assert "thinking" in kinds and final.content[0].type == "thinking"
    assert final.content[0].thinking == block.thinking
    off = client.messages.create(**asked, thinking={"type": "disabled"})
    assert [b.type for b in off.content] == ["text"]
    with pytest.raises(anthropic.BadRequestError, match="does not support thinking"):
        client.messages.create(model="tiny", max_tokens=2, messages=HELLO, thinking=thinking)


def test_a_stop_sequence_is_named_in_the_reply(host: Host) -> None:
    client = anthropic.Anthropic(base_url=host.url, api_key="x", max_retries=0)
    free = client.messages.create(
        model="tiny",
        max_tokens=30,
        extra_body={"temperature": 0},
        messages=[{"role": "user", "content": "hi"}],
    )
    text = "".join(b.text for b in free.content if b.type == "text")
    stop = text.split()[2]  # a word the greedy reply is sure to write
    cut = client.messages.create(
        model="tiny",
        max_tokens=30,
        extra_body={"temperature": 0},
        stop_sequences=[stop],
        messages=[{"role": "user", "content": "hi"}],
    )
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert "".join(b.text for b in cut.content if b.type == "text") == text[: text.index(stop)]
