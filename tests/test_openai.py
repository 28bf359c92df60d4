"""The OpenAI-compatible API with the official ``openai`` client, unmodified, plus LangChain's Ollama
integration; structured outputs and tool calls."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from conftest import Host

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["C", "F"]}},
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "description": "Add two integers",
            "parameters": {
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                "required": ["a", "b"],
            },
        },
    },
]


@pytest.fixture
def client(host: Host) -> openai.OpenAI:
    return openai.OpenAI(base_url=host.url + "/v1", api_key="unused", max_retries=0)


def test_a_base_url_without_v1_says_so(host: Host) -> None:
    """The commonest slip with an OpenAI client: the SDK shows the message, which names the fix."""
    bare = openai.OpenAI(base_url=host.url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as caught:
        bare.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
    assert "did you mean /v1/chat/completions" in caught.value.message


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny:latest"]
    assert client.models.retrieve("tiny:latest").id == "tiny:latest"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("ghost")
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_chat_completion_and_stream_with_usage(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]
    whole = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0)
    choice = whole.choices[0]
    assert choice.finish_reason == "length" and choice.message.role == "assistant" and choice.message.content
    assert whole.usage and whole.usage.completion_tokens == 8 and whole.usage.prompt_tokens > 5
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + 8
    stream = client.chat.completions.create(
        model="tiny",
        messages=messages,
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    events = list(stream)
    text = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
    assert text == choice.message.content
    assert [e.choices[0].finish_reason for e in events if e.choices][-1] == "length"
    assert events[-1].choices == [] and events[-1].usage and events[-1].usage.completion_tokens == 8
    assert len({e.id for e in events}) == 1


def test_max_completion_tokens_and_stop(client: openai.OpenAI) -> None:
    full = (
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}], max_completion_tokens=20, temperature=0
        )
        .choices[0]
        .message.content
    )
    assert full
    stop = full[4:7]
    cut = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "x"}],
        max_completion_tokens=20,
        temperature=0,
        stop=[stop],
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == full[: full.index(stop)]


def test_a_null_limit_leaves_the_other(host: Host) -> None:
    """Clients that write every field send nulls for the unset ones: {"max_tokens": 6,
    "max_completion_tokens": null} means 6 tokens, not a generation to the end of the context."""
    body = {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 0}
    with host.client() as c:
        for limits in (
            {"max_tokens": 6, "max_completion_tokens": None},
            {"max_completion_tokens": 6, "max_tokens": None},
        ):
            out = c.post("/v1/chat/completions", json={**body, **limits}).json()
            assert out["usage"]["completion_tokens"] == 6 and out["choices"][0]["finish_reason"] == "length"
        out = c.post(
            "/v1/completions",
            json={"model": "tiny", "prompt": "the cat", "max_tokens": 5, "max_completion_tokens": None},
        ).json()
        assert out["usage"]["completion_tokens"] == 5


def test_completions_raw_prompt_stream_and_not(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="tiny", prompt="the cat", max_tokens=6, temperature=0)
    assert whole.object == "text_completion" and whole.choices[0].text
    assert whole.usage and whole.usage.completion_tokens == 6
    parts = list(
        client.completions.create(model="tiny", prompt="the cat", max_tokens=6, temperature=0, stream=True)
    )
    assert "".join(p.choices[0].text for p in parts) == whole.choices[0].text
    default = client.completions.create(model="tiny", prompt="the cat", temperature=0)
    assert default.usage and default.usage.completion_tokens == 16  # OpenAI's default max_tokens


def test_n_choices_each_with_its_own_seed(client: openai.OpenAI) -> None:
    """``n`` choices, generated side by side: choice i samples with seed + i, so each is the answer
    a single request with that seed gives; the prompt's tokens count once."""
    chat = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
        "temperature": 1,
    }
    three = client.chat.completions.create(**chat, n=3, seed=7)
    assert [c.index for c in three.choices] == [0, 1, 2]
    alone = [client.chat.completions.create(**chat, seed=7 + i) for i in range(3)]
    assert [c.message.content for c in three.choices] == [a.choices[0].message.content for a in alone]
    assert len({c.message.content for c in three.choices}) > 1
    assert three.usage and three.usage.completion_tokens == 24
    assert alone[0].usage and three.usage.prompt_tokens == alone[0].usage.prompt_tokens
    texts: dict[int, str] = {}
    events = list(
        client.chat.completions.create(
            **chat,
            n=2,
            seed=7,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for event in events:
        for c in event.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
    assert texts == {i: three.choices[i].message.content for i in range(2)}
    finished = [c.index for e in events for c in e.choices if c.finish_reason == "length"]
    assert sorted(finished) == [0, 1]
    assert events[-1].usage and events[-1].usage.completion_tokens == 16 and len({e.id for e in events}) == 1


def test_a_list_of_prompts_gives_their_choices_in_order(client: openai.OpenAI) -> None:
    prompts = ["the cat", "a dog and a"]
    alone = [client.completions.create(model="tiny", prompt=p, max_tokens=5, temperature=0) for p in prompts]
    both = client.completions.create(model="tiny", prompt=prompts, max_tokens=5, temperature=0, n=2)
    assert [c.index for c in both.choices] == [0, 1, 2, 3]
    assert [c.text for c in both.choices] == [a.choices[0].text for a in alone for _ in range(2)]
    assert both.usage and both.usage.completion_tokens == 20
    assert both.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone if a.usage)
    streamed: dict[int, str] = {}
    for event in client.completions.create(
        model="tiny", prompt=prompts, max_tokens=5, temperature=0, stream=True
    ):
        for c in event.choices:
            streamed[c.index] = streamed.get(c.index, "") + c.text
    assert streamed == {0: alone[0].choices[0].text, 1: alone[1].choices[0].text}
    for bad in ({"prompt": [[1, 2, 3]]}, {"prompt": []}, {"n": 0}, {"n": 65}, {"prompt": ["x"] * 33, "n": 2}):
        with pytest.raises(openai.BadRequestError):
            client.completions.create(**{"model": "tiny", "prompt": "x", "max_tokens": 2, **bad})


def test_sse_framing_ends_with_done(host: Host) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    with httpx.Client(base_url=host.url) as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in r.text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    assert all(f.startswith("data: ") for f in frames)
    assert json.loads(frames[0][6:])["object"] == "chat.completion.chunk"


def test_tool_call_required_and_named_on_the_tiny_model(client: openai.OpenAI) -> None:
    """Even a random model produces a well-formed call: generation is constrained by the schema."""
    messages = [{"role": "user", "content": "weather in Paris?"}]
    r = client.chat.completions.create(
        model="tiny", messages=messages, tools=TOOLS, tool_choice="required", max_tokens=120, seed=1
    )
    call = r.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
    assert call.type == "function" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    if call.function.name == "get_weather":
        assert set(args) == {"city", "unit"} and args["unit"] in ("C", "F")
    else:
        assert call.function.name == "add" and isinstance(args["a"], int)
    named = client.chat.completions.create(
        model="tiny",
        messages=messages,
        tools=TOOLS,
        max_tokens=120,
        seed=2,
        tool_choice={"type": "function", "function": {"name": "add"}},
    )
    [named_call] = named.choices[0].message.tool_calls  # type: ignore[misc]  # one call, as OpenAI's
    assert named_call.function.name == "add" and named.choices[0].finish_reason == "tool_calls"
    assert set(json.loads(named_call.function.arguments)) == {"a", "b"}
    none = client.chat.completions.create(
        model="tiny", messages=messages, tools=TOOLS, tool_choice="none", max_tokens=5
    )
    assert none.choices[0].message.tool_calls is None


def test_a_call_cut_short_is_neither_text_nor_a_call(client: openai.OpenAI) -> None:
    """max_tokens ends a required call part way: no half-written JSON as the reply's text, and the
    reason is the limit (OpenAI's "length"), not "tool_calls"."""
    for seed in (1, 2):
        r = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "weather in Paris?"}],
            tools=TOOLS,
            tool_choice="required",
            max_tokens=6,
            seed=seed,
        )
        choice = r.choices[0]
        assert choice.finish_reason == "length", choice
        assert not choice.message.content and not choice.message.tool_calls


def test_required_outranks_the_response_format_and_one_call_when_asked(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "weather in Paris and London?"}]
    for seed in (1, 2, 3):
        r = client.chat.completions.create(
            model="tiny",
            messages=messages,
            tools=TOOLS,
            tool_choice="required",
            response_format={"type": "json_object"},
            parallel_tool_calls=False,
            max_tokens=200,
            seed=seed,
        )
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls or []) == 1, choice


def test_one_call_grammar_and_parser() -> None:
    from ferrousforge.reply import ReplyParser
    from ferrousforge_host.engines.llamacpp import grammar_for

    schema = {"type": "object", "properties": {"name": {"const": "add"}}, "required": ["name"]}
    assert 'call ("\\n" call)*' in grammar_for(None, schema, required=True)  # type: ignore[operator]
    assert "calls ::= call\n" in grammar_for(None, schema, required=True, single=True)  # type: ignore[operator]
    two = '{"name": "add", "arguments": {}}\n{"name": "add", "arguments": {}}'
    for limit, count in ((None, 2), (1, 1)):
        parser = ReplyParser(tools={"add": {}}, json_calls=True, max_calls=limit)
        parts = parser.feed(two)
        rest = parser.finish()
        assert len(parts.calls + rest.calls) == count and not parts.content + rest.content
    cut = ReplyParser(tools={"add": {}}, json_calls=True)
    assert not cut.feed('{"name": "ad') and not cut.finish()  # a call cut short: nothing
    text = ReplyParser(tools={"add": {}})  # without a grammar, unfinished JSON is what was said
    text.feed('{"colour": "re')
    assert text.finish().content == '{"colour": "re'


def test_a_final_assistant_message_is_continued(host: Host) -> None:
    """A chat ending with the assistant's text (a prefill) goes on with that text, as Ollama and
    Anthropic's API do: the prompt ends inside the message, with no new turn opened."""
    messages = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "The answer is"}]
    options = {"temperature": 0, "num_predict": 6}
    prompt = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\nThe answer is"
    with host.client() as c:
        chat = c.post(
            "/api/chat", json={"model": "tiny", "messages": messages, "stream": False, "options": options}
        ).json()
        raw = c.post(
            "/api/generate",
            json={"model": "tiny", "prompt": prompt, "raw": True, "stream": False, "options": options},
        ).json()
    assert (
        chat["message"]["content"] == raw["response"]
        and chat["prompt_eval_count"] == raw["prompt_eval_count"]
    )


def test_tool_results_feed_back_and_ollama_shape(host: Host) -> None:
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": '{"temp": 21}', "tool_name": "get_weather"},
    ]
    with host.client() as c:
        follow = c.post(
            "/api/chat",
            json={
                "model": "tiny",
                "messages": messages,
                "tools": TOOLS,
                "stream": False,
                "options": {"num_predict": 4},
            },
        ).json()
        shorter = c.post(
            "/api/chat",
            json={
                "model": "tiny",
                "messages": messages[:1],
                "tools": TOOLS,
                "stream": False,
                "options": {"num_predict": 4},
            },
        ).json()
        forced = c.post(
            "/api/chat",
            json={
                "model": "tiny",
                "messages": messages[:1],
                "tools": TOOLS,
                "tool_choice": "required",
                "stream": False,
                "options": {"num_predict": 120, "seed": 3},
            },
        ).json()
    assert follow["done"] and follow["prompt_eval_count"] > shorter["prompt_eval_count"] + 10
    tool_call = forced["message"]["tool_calls"][0]["function"]
    assert tool_call["name"] in ("get_weather", "add") and isinstance(tool_call["arguments"], dict)
    assert forced["message"]["content"] == ""


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            {
                "model": "tiny",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}}
                        ],
                    }
                ],
            },
            "lacks the 'vision' capability",
        ),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 30},
            "between 0 and 20",
        ),
        ({"model": "tiny", "messages": []}, "must not be empty"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        (
            {"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            "temperature",
        ),
        (
            {
                "model": "tiny",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "xml"},
            },
            "response_format",
        ),
        (
            {
                "model": "tiny",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
            },
            "schema",
        ),
        (
            {
                "model": "tiny",
                "messages": [{"role": "user", "content": "x"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "frob"}},
                },
            },
            "schema",
        ),
        (
            {
                "model": "tiny",
                "messages": [{"role": "user", "content": "x"}],
                "tools": TOOLS,
                "tool_choice": {"type": "function", "function": {"name": "nope"}},
            },
            "unknown tool",
        ),
        (
            {
                "model": "tiny",
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function"}],
            },
            "tools[0]",
        ),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, "0 to 2"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": -1}, "0 to 2"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "top_p": 2}, "'top_p'"),
        ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "presence_penalty": 3}, "-2 to 2"),
    ],
)
def test_bad_chat_requests_get_openai_shaped_400s(host: Host, body: dict, needle: str) -> None:
    with httpx.Client(base_url=host.url) as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert needle in error["message"] and error["type"] == "invalid_request_error"


def test_echo_scores_the_prompt_as_llama_cpp_computes_it(client: openai.OpenAI, tiny_gguf: Path) -> None:
    """``echo`` with ``logprobs`` and ``max_tokens: 0``: the prompt back, each of its tokens with its
    log-probability given those before it (none for the first), equal to llama.cpp's own logits for
    the whole prompt; a prompt the model has cached is scored whole all the same."""
    from llama_cpp import Llama

    prompt = "the cat sat on the mat"
    client.completions.create(model="tiny", prompt=prompt, max_tokens=2, temperature=0)  # now cached
    scored = client.completions.create(model="tiny", prompt=prompt, max_tokens=0, echo=True, logprobs=3)
    choice = scored.choices[0]
    assert choice.text == prompt and choice.finish_reason == "length"
    assert scored.usage and scored.usage.completion_tokens == 0
    lp = choice.logprobs
    assert lp and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
    assert len(lp.tokens) == scored.usage.prompt_tokens
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    llm = Llama(model_path=str(tiny_gguf), logits_all=True, n_ctx=256, n_threads=1, verbose=False)
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    assert len(tokens) == len(lp.tokens)
    llm.eval(tokens)
    logits = np.array(llm.scores[: len(tokens)], dtype=np.float64)
    peak = logits.max(1, keepdims=True)
    logsoftmax = logits - peak - np.log(np.exp(logits - peak).sum(1, keepdims=True))
    expected = [float(logsoftmax[i - 1, tokens[i]]) for i in range(1, len(tokens))]
    assert np.allclose(lp.token_logprobs[1:], expected, atol=1e-2)  # (float32 sums, other batching)
    for given, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:], strict=True):
        assert top and len(top) == 3 and max(top.values()) >= given - 1e-6
    assert "".join(lp.tokens).strip() == prompt and lp.text_offset == sorted(lp.text_offset)


def test_echo_repeats_each_prompt_before_its_completion(client: openai.OpenAI) -> None:
    plain = client.completions.create(model="tiny", prompt="the cat", max_tokens=4, temperature=0)
    echoed = client.completions.create(model="tiny", prompt="the cat", max_tokens=4, temperature=0, echo=True)
    assert echoed.choices[0].text == "the cat" + plain.choices[0].text
    texts: dict[int, str] = {}
    prompts = ["the cat", "a dog"]
    for event in client.completions.create(
        model="tiny", prompt=prompts, max_tokens=4, temperature=0, echo=True, stream=True
    ):
        for c in event.choices:
            texts[c.index] = texts.get(c.index, "") + c.text
    assert texts[0] == echoed.choices[0].text and texts[1].startswith("a dog") and len(texts[1]) > 5
    with pytest.raises(openai.BadRequestError):  # nothing to say without echo
        client.completions.create(model="tiny", prompt="x", max_tokens=0)


def test_logit_bias_forces_and_bans_tokens(client: openai.OpenAI, tiny_gguf: Path) -> None:
    """``logit_bias``: +100 on a token makes decoding say it over and over, greedy or sampled, in
    completions and chat; -100 on the token greedy decoding picks first keeps it out."""
    from llama_cpp import Llama

    base = {"model": "tiny", "prompt": "the cat", "max_tokens": 4, "temperature": 0, "logprobs": 0}
    plain = client.completions.create(**base)
    assert plain.choices[0].logprobs and plain.choices[0].logprobs.tokens
    first = plain.choices[0].logprobs.tokens[0]
    forced = client.completions.create(**{**base, "logit_bias": {"300": 100}})
    assert forced.choices[0].logprobs and forced.usage and forced.usage.completion_tokens == 4
    tokens = forced.choices[0].logprobs.tokens
    assert len(set(tokens)) == 1 and tokens[0] != first
    sampled = client.completions.create(**{**base, "temperature": 1.0, "seed": 3, "logit_bias": {"300": 100}})
    assert sampled.choices[0].logprobs and sampled.choices[0].logprobs.tokens == tokens
    chat = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "temperature": 0,
    }
    assert (
        client.chat.completions.create(**chat, logit_bias={"300": 100}).choices[0].message.content
        == tokens[0] * 3
    )
    vocab = Llama(model_path=str(tiny_gguf), vocab_only=True, verbose=False)
    [first_id] = [i for i in range(vocab.n_vocab()) if vocab.detokenize([i]) == first.encode()]
    banned = client.completions.create(**{**base, "logit_bias": {str(first_id): -100}})
    assert banned.choices[0].logprobs and banned.choices[0].logprobs.tokens[0] != first
    for bad in ({"300": 101}, {"x": 1}, {"999999999": 5}):
        with pytest.raises(openai.BadRequestError):
            client.completions.create(**{**base, "logit_bias": bad})


def test_bad_completion_requests(client: openai.OpenAI) -> None:
    for extra in ({"echo": "yes"}, {"suffix": "end"}, {"logprobs": -2}):
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model="tiny", prompt="x", max_tokens=2, **extra)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="ghost", prompt="x")


def test_an_assistant_refusal_part_is_its_text(client: openai.OpenAI) -> None:
    refused = {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]}
    turns = [{"role": "user", "content": "x"}, refused, {"role": "user", "content": "why?"}]
    plain = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "I can't help with that."}]
    a = client.chat.completions.create(model="tiny", messages=turns, max_tokens=1)  # type: ignore[arg-type]
    b = client.chat.completions.create(model="tiny", messages=[*plain, turns[2]], max_tokens=1)  # type: ignore[arg-type]
    assert a.usage and b.usage and a.usage.prompt_tokens == b.usage.prompt_tokens


def test_an_empty_prompt_completes_from_the_start(client: openai.OpenAI) -> None:
    """OpenAI: with no prompt the model generates as from the beginning of a new document (Ollama's
    /api/generate only loads the model on one)."""
    r = client.completions.create(model="tiny", prompt="", max_tokens=4, temperature=0)
    assert r.usage and r.usage.completion_tokens == 4 and r.choices[0].text
    both = client.completions.create(model="tiny", prompt=["", "the cat"], max_tokens=3, temperature=0)
    assert all(c.text for c in both.choices)


def test_offsets_and_logprobs_match_the_text(client: openai.OpenAI) -> None:
    """text_offset counts from the prompt's start (as OpenAI's); a stop string's tokens have no
    logprobs, so the tokens given join to the text."""
    r = client.completions.create(model="tiny", prompt="the cat", max_tokens=3, temperature=0, logprobs=1)
    lp = r.choices[0].logprobs
    assert lp and lp.text_offset and lp.tokens and lp.text_offset[0] == len("the cat")
    full = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "x"}], max_tokens=12, temperature=0
    )
    text = full.choices[0].message.content or ""
    stop = text[len(text) // 2 :][:3]
    cut = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "x"}],
        max_tokens=12,
        temperature=0,
        stop=[stop],
        logprobs=True,
    )
    given = "".join(t.token for t in cut.choices[0].logprobs.content or [])  # type: ignore[union-attr]
    content = cut.choices[0].message.content or ""
    assert cut.choices[0].finish_reason == "stop" and stop not in given  # (a token's text may straddle)
    assert given.startswith(content) or content.startswith(given), (given, content)
    off = client.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "x"}],
        max_tokens=2,
        logprobs=False,
        top_logprobs=2,
    )
    assert off.choices[0].logprobs is None  # logprobs: false says none, whatever top_logprobs says


def test_stream_chunks_as_openai_sends_them(host: Host) -> None:
    """The role once, in the first chunk; later deltas only what they add (the finish chunk {}); with
    include_usage every chunk has ``usage`` (null but the last)."""
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.Client(base_url=host.url) as c:
        text = c.post("/v1/chat/completions", json=body).text
    events = [json.loads(f[6:]) for f in text.split("\n\n") if f and f != "data: [DONE]"]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert deltas[0]["role"] == "assistant" and all("role" not in d for d in deltas[1:])
    assert all(e["usage"] is None for e in events[:-1]) and events[-1]["usage"]["completion_tokens"] == 4


def test_models_delete_and_unknown_paths_in_openai_shape(client: openai.OpenAI, host: Host) -> None:
    with host.client() as c:
        assert c.post("/api/copy", json={"source": "tiny", "destination": "spare"}).status_code == 200
        missing = c.get("/v1/nothing")
        wrong = c.put("/v1/chat/completions")
    gone = client.models.delete("spare")
    assert gone.deleted and gone.id == "spare:latest"
    assert [m.id for m in client.models.list().data] == ["tiny:latest"]
    with pytest.raises(openai.NotFoundError):
        client.models.delete("spare")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    assert wrong.status_code == 405 and "method not allowed" in wrong.json()["error"]["message"]


def test_langchain_ollama_chat(host: Host) -> None:
    from langchain_ollama import ChatOllama

    chat = ChatOllama(model="tiny", base_url=host.url, num_predict=5, temperature=0)
    reply = chat.invoke("hello")
    assert isinstance(reply.content, str) and reply.content
    chunks = list(chat.stream("hello"))
    assert "".join(str(c.content) for c in chunks) == reply.content
