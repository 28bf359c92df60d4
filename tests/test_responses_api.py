"""OpenAI's Responses API (/v1/responses) with the official ``openai`` client, unmodified, against a
real host and a tiny GGUF: text, streaming events, structured output, tool round trips, errors."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from test_openai import TOOLS as OPENAI_TOOLS

from conftest import Host, runner_pid
from tinymodel import THINKING_CHATML, write_tiny_llama

TOOLS = [{"type": "function", **tool["function"]} for tool in OPENAI_TOOLS]  # Responses' flat form
FLAG = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


@pytest.fixture
def client(host: Host) -> openai.OpenAI:
    return openai.OpenAI(base_url=host.url + "/v1", api_key="unused", max_retries=0)


def test_text_response_whole_and_streamed(client: openai.OpenAI) -> None:
    whole = client.responses.create(model="tiny", input="hello", max_output_tokens=8, temperature=0)
    assert whole.id.startswith("resp_") and whole.object == "response"
    assert whole.status == "incomplete" and whole.incomplete_details
    assert whole.incomplete_details.reason == "max_output_tokens"
    [message] = whole.output
    assert message.type == "message" and message.role == "assistant" and whole.output_text
    assert whole.usage and whole.usage.output_tokens == 8 and whole.usage.input_tokens > 5
    assert whole.usage.total_tokens == whole.usage.input_tokens + 8

    events = list(
        client.responses.create(model="tiny", input="hello", max_output_tokens=8, temperature=0, stream=True)
    )
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == whole.output_text and len(deltas) == kinds.count("response.output_text.delta")
    last = events[-1].response
    assert last.output_text == whole.output_text and last.usage and last.usage.output_tokens == 8
    assert len({e.response.id for e in events if hasattr(e, "response")}) == 1


def test_instructions_and_message_items_reach_the_prompt(client: openai.OpenAI) -> None:
    plain = client.responses.create(model="tiny", input="hello", max_output_tokens=1)
    told = client.responses.create(
        model="tiny", input="hello", instructions="answer in French, briefly", max_output_tokens=1
    )
    items = client.responses.create(
        model="tiny",
        input=[
            {"role": "developer", "content": "answer in French, briefly"},
            {"role": "user", "content": [{"type": "input_text", "text": "hello"}]},
        ],
        max_output_tokens=1,
    )
    assert plain.usage and told.usage and items.usage
    assert told.usage.input_tokens > plain.usage.input_tokens + 5
    assert items.usage.input_tokens == told.usage.input_tokens
    assert told.instructions == "answer in French, briefly"
    assert plain.truncation == "disabled"
    auto = client.responses.create(model="tiny", input="hello", max_output_tokens=1, truncation="auto")
    assert auto.truncation == "auto"  # said back as asked


def test_structured_output_completes_and_the_stream_helper_parses_it(client: openai.OpenAI) -> None:
    text = {"format": {"type": "json_schema", "name": "flag", "schema": FLAG, "strict": True}}
    whole = client.responses.create(model="tiny", input="ok?", text=text, max_output_tokens=40)
    assert whole.status == "completed" and whole.incomplete_details is None
    assert isinstance(json.loads(whole.output_text)["ok"], bool)
    with client.responses.stream(model="tiny", input="ok?", text=text, max_output_tokens=40) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[-1] == "response.completed" and final.status == "completed"
    assert isinstance(json.loads(final.output_text)["ok"], bool)


def check_call(name: str, arguments: str) -> None:
    args = json.loads(arguments)
    if name == "get_weather":
        assert set(args) == {"city", "unit"} and args["unit"] in ("C", "F")
    else:
        assert name == "add" and isinstance(args["a"], int) and isinstance(args["b"], int)


def test_forced_tool_call_round_trip(client: openai.OpenAI) -> None:
    """A random model still makes well-formed calls (one or more): generation is constrained by the
    schema. Greedy decoding keeps it the same on every run."""
    asked = [{"role": "user", "content": "weather in Paris?"}]
    r = client.responses.create(
        model="tiny",
        input=asked,
        tools=TOOLS,
        tool_choice="required",
        max_output_tokens=400,
        temperature=0,
    )
    assert r.status == "completed" and r.output_text == "" and r.output
    calls = r.output
    for call in calls:
        assert call.type == "function_call" and call.call_id.startswith("call_") and call.id.startswith("fc_")
        check_call(call.name, call.arguments)
    assert len({c.call_id for c in calls}) == len(calls)
    assert [t.name for t in r.tools] == ["get_weather", "add"]

    turns = [
        *asked,
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [],
            "content": [{"type": "reasoning_text", "text": "hm"}],
        },
        *(c.model_dump(exclude_none=True) for c in calls),
        *({"type": "function_call_output", "call_id": c.call_id, "output": '{"temp": 21}'} for c in calls),
    ]
    follow, short = (
        client.responses.create(
            model="tiny",
            input=given,
            tools=TOOLS,
            max_output_tokens=4,
        )
        for given in (turns, asked)
    )
    assert follow.usage and short.usage and follow.usage.input_tokens > short.usage.input_tokens + 10
    assert follow.output[0].type == "message"

    named = client.responses.create(
        model="tiny",
        input=asked,
        tools=TOOLS,
        tool_choice={"type": "function", "name": "add"},
        max_output_tokens=400,
        temperature=0,
    )
    assert named.output and all(c.type == "function_call" and c.name == "add" for c in named.output)
    check_call("add", named.output[0].arguments)


def test_streamed_tool_call_events(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="tiny",
        input="add 2 and 3",
        tools=TOOLS,
        tool_choice={"type": "function", "name": "add"},
        max_output_tokens=400,
        temperature=0,
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[2:6] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    done = [e.arguments for e in events if e.type == "response.function_call_arguments.done"]
    assert final.status == "completed" and [c.arguments for c in final.output] == done
    for call in final.output:
        assert call.type == "function_call" and call.name == "add"
        check_call("add", call.arguments)


def two_calls_last() -> dict[str, Any]:
    """The last chunk of a reply that ends in two tool calls (for the event builders' tests)."""
    return {
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "call_1", "function": {"name": "a", "arguments": {"x": 1}}},
                {"function": {"name": "b", "arguments": {}}},
            ],
        },
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 3,
        "eval_count": 9,
    }


def test_the_event_builder_follows_the_chunk_contract() -> None:
    """Reasoning, text and several calls in one reply (what the producer will send) come out as
    reasoning, message and function_call items, each opened and closed in order."""
    from ferrousforge_host.openai.responses import _Response

    reply = _Response("m", {})
    chunks = [
        {"message": {"role": "assistant", "content": "", "thinking": "let me"}, "done": False},
        {"message": {"role": "assistant", "content": "", "thinking": " see"}, "done": False},
        {"message": {"role": "assistant", "content": "Sure."}, "done": False},
        two_calls_last(),
    ]
    events = [e for c in chunks for e in reply.feed(c)]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    added = [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"]
    assert added == ["reasoning", "message", "function_call", "function_call"]
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed" and final["usage"]["total_tokens"] == 12
    reasoning, message, first, second = final["output"]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "let me see"}]
    assert message["content"][0]["text"] == "Sure." and message["status"] == "completed"
    assert first["call_id"] == "call_1" and first["arguments"] == '{"x": 1}'
    assert second["call_id"].startswith("call_") and second["name"] == "b"


BAD = [
    ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": 5}, "'input'"),
    ({"input": []}, "'input' must not be empty"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "content[0]"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "temperature": "hot"}, "temperature"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "only function tools"),
    ({"input": "x", "tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}}, "unknown tool"),
    ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    (
        {
            "input": [
                {
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": "data:image/png;base64,AAAA"}],
                }
            ]
        },
        "does not support images",
    ),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
        "data URLs",
    ),
]


@pytest.mark.parametrize(("body", "needle"), BAD)
def test_bad_requests_get_openai_shaped_400s(host: Host, body: dict, needle: str) -> None:
    with httpx.Client(base_url=host.url) as c:
        r = c.post("/v1/responses", json={"model": "tiny", **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"


def test_unknown_model_is_a_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.responses.create(model="ghost", input="x")
    assert info.value.body["code"] == "model_not_found"


def test_a_runner_dying_mid_stream_ends_with_error_and_failed_events(host: Host) -> None:
    body = {"model": "tiny", "input": "the", "max_output_tokens": 1500, "temperature": 0.8, "stream": True}
    events = []
    with host.client() as c, c.stream("POST", "/v1/responses", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
                if len(events) == 6:
                    os.kill(runner_pid(host), signal.SIGKILL)
    error, failed = events[-2:]
    assert error["type"] == "error" and "runner process has terminated" in error["message"]
    assert failed["type"] == "response.failed" and failed["response"]["status"] == "failed"
    assert failed["response"]["error"]["message"] == error["message"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_thinking_comes_back_as_a_reasoning_item(host: Host, client: openai.OpenAI, tmp_path: Path) -> None:
    host.pull_file("thinker", write_tiny_llama(tmp_path / "thinker.gguf", chat_template=THINKING_CHATML))
    asked = {"model": "thinker", "input": "hello", "max_output_tokens": 6, "temperature": 0}
    whole = client.responses.create(**asked)
    [item] = whole.output
    assert item.type == "reasoning" and item.id.startswith("rs_") and item.content
    assert item.content[0].type == "reasoning_text" and item.content[0].text and whole.output_text == ""
    events = list(client.responses.create(**asked, stream=True))
    deltas = [e.delta for e in events if e.type == "response.reasoning_text.delta"]
    assert "".join(deltas) == item.content[0].text
    assert events[2].type == "response.output_item.added" and events[2].item.type == "reasoning"
    off = client.responses.create(**asked, reasoning={"effort": "none"})
    assert [o.type for o in off.output] == ["message"] and off.output_text
    with pytest.raises(openai.BadRequestError, match="does not support thinking"):
        client.responses.create(model="tiny", input="x", reasoning={"effort": "low"})
