"""Structural exhaustion: request bodies built to exhaust recursion, memory or a parser (very deep
or very wide JSON, huge numbers, NaN, lone surrogates, huge strings, and such values deep inside
otherwise valid requests) on every route the app serves. No answer may be a 5xx, every refusal
is a 4xx with an error, and the server still answers afterwards. Limits: ``ferrousforge_host.http``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Mount, Route

from ferrousforge.errors import BadRequest
from ferrousforge_host.http import MAX_CONTAINERS, MAX_DEPTH, MAX_KEYS, check_structure

from conftest import Host, start_host

MODEL = "tiny"
DIGEST = "sha256:" + "0" * 64
PATH_VALUES = {"digest": DIGEST, "model": MODEL}
DESTRUCTIVE = {"/api/delete", "/api/copy", "/api/create"}  # never sent the real name


@pytest.fixture(scope="module")
def forge(tmp_path_factory: pytest.TempPathFactory, tiny_gguf: Path) -> Iterator[Host]:
    """One host for the module, with the tiny model pulled so that names resolve."""
    for h in start_host(tmp_path_factory.mktemp("exhaustion") / "store"):
        h.pull_file(MODEL, tiny_gguf)
        yield h


def nest(levels: int, inner: Any = 1) -> Any:
    """``levels`` JSON levels: arrays and objects in turn."""
    for i in range(levels):
        inner = [inner] if i % 2 else {"a": inner}
    return inner


def deep_schema(levels: int) -> dict[str, Any]:
    """A JSON schema of objects in objects; each schema level is two JSON levels."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def raw(model: str, tail: str) -> bytes:
    """A body with ``model`` first and hand-written JSON after it (for what json.dumps won't write)."""
    return ('{"model": ' + json.dumps(model) + ", " + tail + "}").encode()


def structural(model: str) -> list[tuple[str, bytes]]:
    """Hostile bodies that read_json must bound, whatever the route."""
    dumps = json.dumps
    return [
        ("deep arrays", b"[" * 100_000 + b"]" * 100_000),
        ("deep objects", b'{"a":' * 50_000 + b"1" + b"}" * 50_000),
        ("unclosed brackets", b"[{" * 500_000),
        ("closers only", b"]}" * 500_000),
        ("one level too deep", dumps({"model": model, "x": nest(MAX_DEPTH)}).encode()),
        ("deep mixed, strings with brackets", dumps({"model": model, "x": nest(200, ']}"[{')}).encode()),
        ("brackets inside a string", dumps({"model": model, "x": "[{" * 200_000}).encode()),
        ("too many arrays", dumps({"model": model, "x": [[]] * (MAX_CONTAINERS + 1)}).encode()),
        ("too many keys", dumps({"model": model, **{f"k{i}": 0 for i in range(MAX_KEYS + 1)}}).encode()),
        ("wide flat array", dumps({"model": model, "x": [0] * 1_000_000}).encode()),
        ("1 MB key", dumps({"model": model, "k" * 1_000_000: 1}).encode()),
        ("4 MB of unicode", dumps({"model": model, "x": "é💥中\u0301\u200b" * 800_000}).encode()),
        ("NaN", raw(model, '"options": {"temperature": NaN}')),
        ("Infinity", raw(model, '"options": {"seed": Infinity, "top_p": -Infinity}')),
        ("1e999", raw(model, '"options": {"temperature": 1e999}, "keep_alive": -1e999')),
        ("5000-digit integer", raw(model, '"options": {"seed": ' + "9" * 5000 + "}")),
        ("4300-digit integer", raw(model, '"options": {"num_predict": ' + "9" * 4300 + "}")),
        ("1 MB number", raw(model, '"keep_alive": 0.' + "1" * 1_000_000)),
        ("lone high surrogate", raw(model, '"prompt": "\\ud800", "input": "\\ud800"')),
        ("lone low surrogate", raw(model, '"messages": [{"role": "user", "content": "a\\udfff"}]')),
        ("reversed surrogate pair", raw(model, '"query": "\\udc00\\ud800"')),
        ("surrogate in the model name", b'{"model": "tiny\\udfff", "source": "\\ud800"}'),
        ("surrogate as raw bytes", b'{"model": "tiny", "prompt": "\xed\xa0\x80"}'),
        ("overlong UTF-8", b'{"model": "tiny", "prompt": "\xc0\xaf"}'),
        ("duplicate keys", raw("absent", f'"model": {dumps(model)}, "model": "absent"')),
        ("raw control characters", b'{"model": "tiny", "prompt": "\x00\x1b"}'),
        ("10k stop strings", dumps({"model": model, "options": {"stop": ["x"] * 10_000}}).encode()),
        ("giant options", dumps({"model": model, "options": {f"o{i}": i for i in range(5_000)}}).encode()),
    ]


def routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, path parameters filled in with a plausible value."""
    out = []
    for route in app.routes:
        if isinstance(route, Mount):
            out.append(("GET", route.path + "/index.html"))
        elif isinstance(route, Route):
            path = re.sub(r"\{(\w+)(:\w+)?\}", lambda m: PATH_VALUES.get(m[1], "x"), route.path)
            out += [(m, path) for m in sorted(route.methods or {"GET"}) if m != "HEAD"]
    return out


def refusal(r: httpx.Response) -> str | None:
    """Why an answer breaks the rules (a 5xx, or a 4xx without an error message), else None."""
    if r.status_code >= 500:
        return f"{r.status_code}: {r.text[:200]}"
    if r.status_code >= 400 and r.request.method != "HEAD":
        error = r.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if not isinstance(message, str) or not message:
            return f"{r.status_code} without an error message: {r.text[:200]}"
    return None


def healthy(c: httpx.Client) -> None:
    assert c.get("/api/version").status_code == 200
    r = c.post(
        "/api/generate", json={"model": MODEL, "prompt": "a", "stream": False, "options": {"num_predict": 1}}
    )
    assert r.status_code == 200, r.text


def test_structural_bodies_on_every_route(forge: Host) -> None:
    found = routes(forge.app)
    posts = [(m, p) for m, p in found if m in ("POST", "DELETE")]
    assert len(posts) >= 20 and ("POST", "/api/rerank") in posts and ("POST", "/v1/chat/completions") in posts
    failures: list[tuple[str, ...]] = []
    with forge.client(timeout=60) as c:
        for method, named in posts:
            path = named.replace(MODEL, "absent") if method == "DELETE" else named  # (DELETE /v1/models/...)
            for label, body in structural("absent" if path in DESTRUCTIVE else MODEL):
                try:
                    r = c.request(method, path, content=body, headers={"Content-Type": "application/json"})
                except httpx.TransportError as exc:  # a dropped connection is a failure too
                    failures.append((method, path, label, repr(exc)))
                    continue
                if problem := refusal(r):
                    failures.append((method, path, label, problem))
        healthy(c)
    assert failures == []


def test_limits_are_400s_that_name_them(forge: Host) -> None:
    cases = {
        "deep arrays": f"deeper than {MAX_DEPTH} levels",
        "deep objects": f"deeper than {MAX_DEPTH} levels",
        "unclosed brackets": f"more than {MAX_CONTAINERS} objects and arrays",
        "one level too deep": f"deeper than {MAX_DEPTH} levels",
        "too many arrays": f"more than {MAX_CONTAINERS} objects and arrays",
        "too many keys": f"more than {MAX_KEYS} object keys",
        "NaN": "invalid JSON",
        "1e999": "invalid JSON",
        "5000-digit integer": "invalid JSON",
        "lone high surrogate": "invalid JSON",
        "surrogate as raw bytes": "not valid UTF-8",
    }
    bodies = dict(structural(MODEL))
    with forge.client() as c:
        for label, expected in cases.items():
            r = c.post("/api/chat", content=bodies[label])
            assert r.status_code == 400 and expected in r.json()["error"], (label, r.text)
        # OpenAI's paths answer in OpenAI's error shape
        r = c.post("/v1/chat/completions", content=bodies["deep arrays"])
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert f"deeper than {MAX_DEPTH}" in r.json()["error"]["message"]


def test_depth_is_measured_outside_strings() -> None:
    """Brackets, escaped quotes and backslashes inside strings do not count; every level outside does."""
    tricky = ["]]}}", '\\"[[{{', "\\", '\\\\"', "[" * 100]
    for levels, ok in ((MAX_DEPTH, True), (MAX_DEPTH + 1, False)):
        body = json.dumps(nest(levels - 1, tricky)).encode()  # the list of strings is a level too
        assert json.loads(body) and body.count(b"[") + body.count(b"{") > MAX_DEPTH
        if ok:
            check_structure(body)
        else:
            with pytest.raises(BadRequest, match=f"deeper than {MAX_DEPTH}"):
                check_structure(body)


def test_what_is_within_the_limits_still_parses(forge: Host) -> None:
    """The deepest allowed body, brackets in strings, a BOM, duplicate keys (last wins), and the
    full ranges of integers that options take (a seed up to 2**64 - 1)."""
    ok = {"model": MODEL, "prompt": "[[{{", "stream": False, "options": {"num_predict": 1}}
    with forge.client() as c:
        deepest = {**ok, "x": nest(MAX_DEPTH - 1)}
        assert c.post("/api/generate", json=deepest).status_code == 200
        assert c.post("/api/generate", content=b"\xef\xbb\xbf" + json.dumps(ok).encode()).status_code == 200
        twice = b'{"model": "absent", ' + json.dumps(ok).encode()[1:]
        assert c.post("/api/generate", content=twice).status_code == 200
        for seed in (2**64 - 1, -(2**63), 0):
            r = c.post("/api/generate", json={**ok, "options": {"num_predict": 1, "seed": seed}})
            assert r.status_code == 200, (seed, r.text)
        r = c.post("/api/generate", json={**ok, "options": {"num_predict": 1, "seed": 2**64}})
        assert r.status_code == 200  # out of range: ignored, as Ollama does
        r = c.post("/api/generate", json={**ok, "context": [2**31 + 5]})
        assert r.status_code == 400 and "context" in r.json()["error"]


def test_hostile_queries_paths_and_headers_on_every_get_route(forge: Host) -> None:
    gets = [p for m, p in routes(forge.app) if m == "GET"]
    queries = [
        "?" + "a=1&" * 2000,
        "?" + "x" * 7000,
        "?q=%ED%A0%80&r=%FF%FE&s=%00",
        "?" + "[" * 3000 + "=" + "{" * 3000,
        "?isolated=0&isolated=1&digest=../../etc",
    ]
    paths = [
        "/api/blobs/sha256:" + "%ED%A0%80" * 20,
        "/api/blobs/" + "a" * 7000,
        "/v1/models/" + "%ED%A0%80",
        "/v1/models/" + "a:" * 3000,
        "/v1/models/" + "%5B" * 3000,
        "/v1/models/tiny%00",
        "/ui/" + "a/" * 3000,
        "/ui/%ED%A0%80",
        "/ui/runtime/" + "%2e%2e/" * 500 + "etc/passwd",
        "/" + "x" * 7000,
    ]
    headers = [
        {"X-Request-ID": "x" * 8000},
        {"Origin": "http://localhost:" + "9" * 5000},
        {"Authorization": "Bearer " + "k" * 8000},
        {"Accept": "application/json;q=" + "9" * 5000},
    ]
    failures: list[tuple[str, ...]] = []
    with forge.client() as c:
        for url in [p + q for p in gets for q in queries] + paths:
            if problem := refusal(c.get(url)):
                failures.append((url[:80], problem))
        for extra in headers:
            for url in gets:
                if problem := refusal(c.get(url, headers=extra)):
                    failures.append((url, next(iter(extra)), problem))
        healthy(c)
    assert failures == []


def form(parts: list[tuple[bytes, bytes]], boundary: bytes = b"b0") -> bytes:
    """A multipart/form-data body from (part headers, part data) pairs."""
    out = b"".join(b"--" + boundary + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n" for head, data in parts)
    return out + b"--" + boundary + b"--\r\n"


def part(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    return b'Content-Disposition: form-data; name="' + name + b'"', value


def test_hostile_multipart_forms_on_the_upload_routes(forge: Host) -> None:
    uploads = [p for m, p in routes(forge.app) if p.endswith(("/transcriptions", "/translations"))]
    assert len(uploads) == 2
    audio = (b'Content-Disposition: form-data; name="file"; filename="a.wav"', b"RIFF")
    model = part(b"model", MODEL.encode())
    forms = [
        form([audio, *[part(b"f%d" % i, b"v") for i in range(1000)]]),
        form([audio, audio, model]),
        form([audio, model, part(b"prompt", b"p" * 3_000_000)]),
        form([audio, model], b"b" * 70_000),
        form([audio, part(b"model", b"tiny\xed\xa0\x80\xff"), part(b"mo\xffdel", b"x")]),
        form([audio, model, part(b"temperature", b"9" * 5000), part(b"language", b"\x00" * 1000)]),
        form([(audio[0] + b"\r\nX-A: b" * 1000, b"RIFF"), model]),
        form([(b'Content-Disposition: form-data; name="file"; filename="' + b"../" * 3000 + b'\x00"', b"")]),
        form([audio, model, *[part(b"timestamp_granularities[]", b"word," * 10_000)] * 60]),
        b"--b0\r\n" + audio[0] + b"\r\n\r\n" + b"RIFF" * 100_000,  # never closed
    ]
    failures = []
    with forge.client() as c:
        for url in uploads:
            for i, body in enumerate(forms):
                boundary = "b" * 70_000 if i == 3 else "b0"
                r = c.post(
                    url, content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
                )
                if problem := refusal(r):
                    failures.append((url, i, problem))
            r = c.post(url, content=form([audio, model]), headers={"Content-Type": "multipart/form-data"})
            assert r.status_code == 400 and "boundary" in r.json()["error"]["message"]
        healthy(c)
    assert failures == []


# Hostile values inside otherwise valid requests, so that each reaches past the parser into the
# handlers (schemas, templates, tokenizer, engine): (path, label, body, why it fails, if it does).
GEN = {"model": MODEL, "stream": False, "options": {"num_predict": 1}}
ASK: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
CHAT = {**GEN, "messages": ASK}
OPENAI = {"model": MODEL, "max_tokens": 1, "messages": ASK}
MB = "é💥中\u0301" * 100_000  # 1 MB of unicode
# Each once answered 500; the fixes are at the entry points (fields, schema bounds, the template sandbox)
TEMPLATE = GRAMMAR = ARGUMENTS = MODELFILE = RESPONSES = None


def tool(parameters: dict[str, Any], name: str = "t") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def called(arguments: str) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"function": {"name": "t", "arguments": arguments}}],
    }


VALUES: list[tuple[str, str, dict[str, Any], str | None]] = [
    ("/api/generate", "4 MB unicode prompt", {**GEN, "prompt": MB * 4}, None),
    ("/api/generate", "1 MB system and suffix", {**GEN, "prompt": "a", "system": MB, "suffix": MB}, None),
    (
        "/api/generate",
        "huge num_predict",
        {**GEN, "prompt": "a", "options": {"num_predict": 10**30, "num_ctx": 64}},
        None,
    ),
    (
        "/api/generate",
        "num_predict 1e308",
        {**GEN, "prompt": "a", "options": {"num_predict": 1e308, "num_ctx": 64}},
        None,
    ),
    ("/api/generate", "huge keep_alive", {**GEN, "prompt": "a", "keep_alive": 1e308}, None),
    ("/api/generate", "5000-digit keep_alive", {**GEN, "prompt": "a", "keep_alive": "9" * 5000 + "h"}, None),
    (
        "/api/generate",
        "deep format schema",
        {**GEN, "prompt": "a", "format": deep_schema(MAX_DEPTH // 2 - 2)},
        None,
    ),
    (
        "/api/generate",
        "wide format schema",
        {
            **GEN,
            "prompt": "a",
            "format": {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(20_000)}},
        },
        None,
    ),
    (
        "/api/generate",
        "5000-value enum",
        {**GEN, "prompt": "a", "format": {"enum": [f"v{i}" for i in range(5_000)]}},
        None,
    ),
    ("/api/generate", "self-referencing schema", {**GEN, "prompt": "a", "format": {"$ref": "#"}}, None),
    (
        "/api/generate",
        "$ref cycle",
        {
            **GEN,
            "prompt": "a",
            "format": {
                "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                "$ref": "#/$defs/a",
            },
        },
        None,
    ),
    (
        "/api/generate",
        "minItems 10**9",
        {**GEN, "prompt": "a", "format": {"type": "array", "minItems": 10**9, "maxItems": 10**12}},
        None,
    ),
    (
        "/api/generate",
        "maxLength 100000",
        {**GEN, "prompt": "a", "format": {"type": "string", "maxLength": 100_000}},
        GRAMMAR,
    ),
    (
        "/api/generate",
        "maxItems 100000",
        {
            **GEN,
            "prompt": "a",
            "format": {"type": "array", "items": {"type": "integer"}, "maxItems": 100_000},
        },
        GRAMMAR,
    ),
    (
        "/api/generate",
        "pattern a{100000}",
        {**GEN, "prompt": "a", "format": {"type": "string", "pattern": "^a{100000}$"}},
        None,
    ),
    (
        "/api/generate",
        "pattern of 3000 nested groups",
        {**GEN, "prompt": "a", "format": {"type": "string", "pattern": "(" * 3000 + "a" + ")" * 3000}},
        None,
    ),
    ("/api/generate", "100k token context", {**GEN, "prompt": "a", "context": [5] * 100_000}, None),
    (
        "/api/generate",
        "context beyond the vocabulary",
        {**GEN, "prompt": "a", "context": [2**31 - 1, 99_999]},
        None,
    ),
    ("/api/generate", "10k images", {**GEN, "prompt": "a", "images": ["aGk="] * 10_000}, None),
    (
        "/api/generate",
        "template of 2000 nested ifs",
        {**GEN, "prompt": "a", "template": "{% if 1 %}" * 2000 + "x" + "{% endif %}" * 2000},
        TEMPLATE,
    ),
    (
        "/api/generate",
        "template of 5000 nested parentheses",
        {**GEN, "prompt": "a", "template": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"},
        TEMPLATE,
    ),
    (
        "/api/generate",
        "4 MB template",
        {**GEN, "prompt": "a", "template": "{{ .Prompt }}" + "t" * 4_000_000},
        None,
    ),
    ("/api/chat", "20k messages", {**GEN, "messages": [{"role": "user", "content": "hi"}] * 20_000}, None),
    (
        "/api/chat",
        "30k content parts",
        {**GEN, "messages": [{"role": "user", "content": [{"text": "a"}] * 30_000}]},
        None,
    ),
    (
        "/api/chat",
        "10k tools",
        {**CHAT, "tools": [tool({"type": "object"}, f"t{i}") for i in range(10_000)]},
        None,
    ),
    (
        "/api/chat",
        "deep tool parameters",
        {**CHAT, "tools": [tool(deep_schema(MAX_DEPTH // 2 - 4))], "tool_choice": "required"},
        None,
    ),
    (
        "/api/chat",
        "self-referencing tool parameters",
        {**CHAT, "tools": [tool({"$ref": "#"})], "tool_choice": "required"},
        None,
    ),
    (
        "/api/chat",
        "deep tool call arguments (JSON text)",
        {**GEN, "messages": [*ASK, called("[" * 100_000 + "]" * 100_000)]},
        ARGUMENTS,
    ),
    (
        "/api/chat",
        "5000-digit number in tool call arguments",
        {**GEN, "messages": [*ASK, called('{"x": ' + "9" * 5000 + "}")]},
        None,
    ),
    (
        "/api/chat",
        "1 MB tool name",
        {**GEN, "messages": [{"role": "tool", "content": "r", "tool_name": "n" * 1_000_000}]},
        None,
    ),
    ("/api/chat", "deep format schema", {**CHAT, "format": deep_schema(MAX_DEPTH // 2 - 2)}, None),
    (
        "/v1/chat/completions",
        "20k messages",
        {**OPENAI, "messages": [{"role": "user", "content": "hi"}] * 20_000},
        None,
    ),
    (
        "/v1/chat/completions",
        "30k content parts",
        {**OPENAI, "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 30_000}]},
        None,
    ),
    ("/v1/chat/completions", "10k stop strings", {**OPENAI, "stop": ["x"] * 10_000}, None),
    (
        "/v1/chat/completions",
        "huge max_tokens, streamed",
        {**OPENAI, "max_tokens": 10**30, "stream": True},
        None,
    ),
    ("/v1/chat/completions", "seed 2**64", {**OPENAI, "seed": 2**64}, None),
    (
        "/v1/chat/completions",
        "deep response schema",
        {
            **OPENAI,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": deep_schema(MAX_DEPTH // 2 - 4)},
            },
        },
        None,
    ),
    (
        "/v1/chat/completions",
        "deep tool parameters",
        {**OPENAI, "tools": [tool(deep_schema(MAX_DEPTH // 2 - 5))]},
        None,
    ),
    ("/v1/chat/completions", "deep tool_choice", {**OPENAI, "tool_choice": nest(MAX_DEPTH - 2)}, None),
    (
        "/v1/messages",
        "30k content blocks",
        {
            "model": MODEL,
            "max_tokens": 1,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}] * 30_000}],
        },
        None,
    ),
    (
        "/v1/messages",
        "deep tool input_schema, 10k stop sequences",
        {
            "model": MODEL,
            "max_tokens": 1,
            "messages": ASK,
            "tools": [{"name": "t", "input_schema": deep_schema(MAX_DEPTH // 2 - 5)}],
            "stop_sequences": ["x"] * 10_000,
        },
        None,
    ),
    (
        "/v1/messages/count_tokens",
        "1 MB message",
        {"model": MODEL, "messages": [{"role": "user", "content": MB}]},
        None,
    ),
    ("/v1/responses", "1 MB input", {"model": MODEL, "max_output_tokens": 16, "input": MB}, None),
    (
        "/v1/responses",
        "deep text.format schema",
        {
            "model": MODEL,
            "max_output_tokens": 16,
            "input": "a",
            "text": {
                "format": {"type": "json_schema", "name": "x", "schema": deep_schema(MAX_DEPTH // 2 - 5)}
            },
        },
        None,
    ),
    (
        "/v1/responses",
        "deep function_call arguments (JSON text)",
        {
            "model": MODEL,
            "max_output_tokens": 16,
            "input": [
                {
                    "type": "function_call",
                    "call_id": "c",
                    "name": "t",
                    "arguments": "[" * 100_000 + "]" * 100_000,
                }
            ],
        },
        RESPONSES,
    ),
    (
        "/v1/audio/speech",
        "1 MB input, 100k voice, speed 1e308",
        {"model": MODEL, "input": MB, "voice": "v" * 100_000, "speed": 1e308},
        None,
    ),
    ("/v1/completions", "1 MB prompt", {"model": MODEL, "max_tokens": 1, "prompt": MB}, None),
    (
        "/v1/completions",
        "100k prompt list",
        {"model": MODEL, "max_tokens": 1, "prompt": ["a"] * 100_000},
        None,
    ),
    ("/api/embed", "1 MB input, not truncated", {"model": MODEL, "input": MB, "truncate": False}, None),
    ("/api/embed", "2049 inputs", {"model": MODEL, "input": ["a"] * 2049}, None),
    ("/api/embed", "dimensions 10**30", {"model": MODEL, "input": "a", "dimensions": 10**30}, None),
    ("/api/embeddings", "1 MB prompt", {"model": MODEL, "prompt": MB}, None),
    ("/v1/embeddings", "100k token ids", {"model": MODEL, "input": [5] * 100_000}, None),
    (
        "/v1/embeddings",
        "token ids beyond the vocabulary",
        {"model": MODEL, "input": [[2**31 - 1, 99_999]]},
        None,
    ),
    ("/api/rerank", "2049 documents", {"model": MODEL, "query": "q", "documents": ["d"] * 2049}, None),
    (
        "/v1/rerank",
        "1 MB query, top_n 10**30",
        {"model": MODEL, "query": MB, "documents": ["d"], "top_n": 10**30},
        None,
    ),
    ("/api/show", "deep verbose", {"model": MODEL, "verbose": nest(MAX_DEPTH - 2)}, None),
    (
        "/api/create",
        "deep modelfile parameter",
        {"model": "made", "modelfile": "FROM tiny\nPARAMETER temperature " + "[" * 100_000},
        MODELFILE,
    ),
    (
        "/api/create",
        "100k modelfile parameters",
        {"model": "made", "modelfile": "FROM tiny\n" + "PARAMETER stop x\n" * 100_000},
        None,
    ),
    (
        "/api/create",
        "deep parameters",
        {"model": "made", "from": MODEL, "parameters": {"stop": nest(MAX_DEPTH - 3)}},
        None,
    ),
    (
        "/api/create",
        "50k files",
        {"model": "made", "files": {f"f{i}.gguf": DIGEST for i in range(50_000)}},
        None,
    ),
    (
        "/api/create",
        "20k nested license entries",
        {"model": "made", "from": MODEL, "license": [nest(4)] * 20_000},
        None,
    ),
    ("/api/copy", "1 MB destination", {"source": MODEL, "destination": "d" * 1_000_000}, None),
    ("/api/pull", "NUL in source", {"model": "made", "source": "/tmp/\u0000x.gguf", "stream": False}, None),
    (
        "/api/pull",
        "100k source path",
        {"model": "made", "source": "/" + "a" * 100_000, "stream": False},
        None,
    ),
    (
        "/api/pull",
        "50k-folder source path",
        {"model": "made", "source": "/a" * 50_000, "stream": False},
        None,
    ),
    ("/api/browser/model", "1 MB model name", {"model": "m" * 1_000_000}, None),
    ("/api/delete", "1 MB model name", {"model": "m/" * 500_000}, None),
    (
        "/api/generate",
        "template looping 10**10 times",
        {
            **GEN,
            "prompt": "a",
            "template": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        },
        None,
    ),
    (
        "/api/generate",
        "template making 10 GB",
        {**GEN, "prompt": "a", "template": '{{ "a" * 10**10 }}'},
        None,
    ),
    (
        "/api/generate",
        "minLength 10**9",
        {**GEN, "prompt": "a", "format": {"type": "string", "minLength": 10**9}},
        None,
    ),
    (
        "/api/chat",
        "tool with maxItems 10**6",
        {**CHAT, "tools": [tool({"type": "array", "maxItems": 10**6})]},
        None,
    ),
]


def cases() -> list[Any]:
    out = []
    for path, label, body, broken in VALUES:
        marks = [pytest.mark.xfail(strict=True, reason=broken)] if broken else []
        out.append(pytest.param(path, body, id=f"{path} {label}", marks=marks))
    return out


@pytest.mark.parametrize(("path", "body"), cases())
def test_hostile_value_inside_a_valid_request(forge: Host, path: str, body: dict[str, Any]) -> None:
    with forge.client(timeout=60) as c:
        with c.stream("POST", path, json=body) as r:
            if r.status_code >= 400 or not body.get("stream"):
                r.read()  # (a 200 stream is closed after its status line: that ends the generation)
            assert refusal(r) is None, (r.status_code, r.text[:300] if r.is_stream_consumed else "")
        assert c.get("/api/version").status_code == 200
