"""/openapi.json: it names every route, and schemathesis finds no server errors and no response that
differs from the document, over real HTTP with real (tiny) models under the documented example names."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from jsonschema import Draft202012Validator
from schemathesis.checks import positive_data_acceptance
from starlette.routing import Mount, Route

from ferrousforge_host.openapi.document import document

from conftest import Host, start_host
from test_embeddings import tiny_bert
from tinymodel import write_tiny_llama

UNDOCUMENTED = {"/ui"}  # a redirect to the demo site
# Bodies whose validity a JSON Schema can't state (a Modelfile's syntax, which blobs exist):
# valid-looking data may still be a 400 there.
FREE_TEXT = {"/api/create"}
# Audio: whether an upload's bytes are audio, and which voices a model has, no schema states; and this
# store has no speech models (tests/test_speech.py runs the real ones). Fuzzed here: no 5xx, every
# answer as documented.
AUDIO = {"/v1/audio/transcriptions", "/v1/audio/translations", "/v1/audio/speech"}
FREE_TEXT |= AUDIO
NDJSON = "application/x-ndjson"
NO_SUCCESS = {"POST /api/pull", "POST /api/push"} | {f"POST {path}" for path in AUDIO}  # random names
# are not in the catalogue, sources are kept offline, no registry to push to; no speech models here


@pytest.fixture(scope="module")
def api_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    root = tmp_path_factory.mktemp("openapi")
    sources = {"gemma3:270m": write_tiny_llama(root / "tiny.gguf"), "all-minilm": tiny_bert(root / "bert")}
    for host in start_host(root / "store", max_queue=64):
        for name, path in sources.items():
            host.pull_file(name, path)
        yield host


@pytest.fixture(scope="module")
def api_schema(api_host: Host) -> object:
    return schemathesis.openapi.from_url(api_host.url + "/openapi.json")


def test_the_document_names_every_route_and_method(api_host: Host) -> None:
    import httpx

    paths = httpx.get(api_host.url + "/openapi.json").json()["paths"]
    served = set()
    for route in getattr(api_host.app, "routes", []):
        if isinstance(route, Route) and route.path not in UNDOCUMENTED:
            path = route.path.replace(":path}", "}")
            served |= {(path, m.lower()) for m in route.methods or () if m != "HEAD"}  # HEAD: with GET
        else:
            assert isinstance(route, Mount | Route)
    documented = {(path, m) for path, ops in paths.items() for m in ops if m not in ("parameters", "head")}
    assert documented == served


DOCUMENT = document()
SCHEMA = schemathesis.openapi.from_dict(DOCUMENT)
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}


REAL_MODEL = {"embed": "all-minilm", "embeddings": "all-minilm", "rerank": "all-minilm"}


def runnable(case: schemathesis.Case, digest: str) -> None:
    """Point about half of the generated requests at the test's models (under the document's example
    names) and keep those short. What a schema cannot say is made consistent: no images for a text
    model, a tool_choice naming a given tool, real JSON schemas for grammars, token ids and dimensions
    within the model's, prompts within its context."""
    if case.method == "POST" and case.path.startswith("/api/blobs/"):
        case.body = repr(case.body).encode()
        case.path_parameters = {"digest": "sha256:" + hashlib.sha256(case.body).hexdigest()}
        return
    coin = len(repr(case.body if case.body is not None else case.path_parameters)) % 2 == 1
    if case.path.startswith("/api/blobs/") and coin:
        case.path_parameters = {"digest": digest}
    if case.path.startswith("/v1/models/") and coin:
        case.path_parameters = {"model": "gemma3:270m"}
    body = case.body
    if not coin or not isinstance(body, dict) or case.path == "/api/pull":
        return
    name = REAL_MODEL.get(case.path.rsplit("/", 1)[-1], "gemma3:270m")
    made = "made-" + hashlib.sha256(repr(body).encode()).hexdigest()[:8]  # never a name asked for
    for key in ("model", "source", "from"):
        if key in body:
            body[key] = name
    if case.path == "/api/copy":
        body["destination"] = made
    if case.path == "/api/create":  # from the model, leaving out the free-form fields
        body.update(model=made, **{"from": name})
        for key in ("files", "modelfile", "template", "parameters"):
            body.pop(key, None)
    _short(body, v1=case.path.startswith("/v1/"))
    if case.path in DIALECTS:
        _dialect(body, case.path)
    else:
        _grammars(body)
    if isinstance(body.get("input"), list):  # token ids within the embedding model's vocabulary
        body["input"] = [[t % 30000 for t in x] if isinstance(x, list) else x for x in body["input"]]
        body["input"] = [x % 30000 if isinstance(x, int | float) else x for x in body["input"]]
    if isinstance(body.get("dimensions"), int | float):
        body["dimensions"] = min(body["dimensions"], 32)
    prompts = body.get("prompt")
    if (
        case.path == "/v1/completions"
        and isinstance(body.get("n"), int | float)
        and isinstance(prompts, list)
    ):
        body["n"] = max(1, min(body["n"], 64 // max(1, len(prompts))))  # n times the prompts: at most 64
    if body.get("context"):
        body["context"] = [t % 300 for t in body["context"]]  # the tiny model's vocabulary
    if isinstance(body.get("logit_bias"), dict):
        body["logit_bias"] = {str(int(t) % 300): b for t, b in body["logit_bias"].items()}
    body.pop("images", None)
    for message in body.get("messages") or []:
        message.pop("images", None)
        if isinstance(message.get("content"), list):  # no pictures for the text-only model
            message["content"] = [p for p in message["content"] if p.get("type") != "image_url"]
    # nor fill-in-the-middle (no FIM tokens) or thinking (its template has no thinking section)
    body.pop("suffix", None)
    if body.get("think") not in (None, False):
        body.pop("think")
    if body.get("reasoning_effort") not in (None, "none", "minimal"):
        body.pop("reasoning_effort")


def _short(body: dict, v1: bool) -> None:
    if v1:
        body["max_tokens"], body["max_completion_tokens"] = 8, None
    else:
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        # an engine runs some formats only (a schema can't tie it to the model): the model's own
        body["options"] = {**options, "num_predict": 8, "num_ctx": None, "engine": None}
    if isinstance(body.get("messages"), list):
        body["messages"] = body["messages"][:8]
    for message in body.get("messages") or []:
        message.pop("tool_calls", None)
        if isinstance(message.get("content"), str):
            message["content"] = message["content"][:100]
        elif isinstance(message.get("content"), list):
            message["content"] = message["content"][:2]
            for part in message["content"]:
                if isinstance(part.get("text"), str):
                    part["text"] = part["text"][:100]
    for key in ("prompt", "system", "suffix", "template"):
        if isinstance(body.get(key), str):
            body[key] = body[key][:200]


def _grammars(body: dict) -> None:
    if isinstance(body.get("tools"), list):
        body["tools"] = body["tools"][:2]
        for tool in body["tools"]:
            tool["function"] = {"name": tool["function"]["name"], "parameters": {"type": "object"}}
    tools = body.get("tools") or []
    if isinstance(body.get("tool_choice"), dict) or body.get("tool_choice") == "required":
        named = {"type": "function", "function": {"name": tools[0]["function"]["name"]}} if tools else "auto"
        body["tool_choice"] = named if isinstance(body["tool_choice"], dict) else body["tool_choice"]
        if not tools:
            body["tool_choice"] = "auto"
    if tools:
        body.pop("format", None), body.pop("response_format", None)
    if isinstance(body.get("format"), dict):
        body["format"] = {"type": "object"}
    if isinstance(body.get("response_format"), dict) and "json_schema" in body["response_format"]:
        body["response_format"]["json_schema"]["schema"] = {"type": "object"}


DIALECTS = {"/v1/responses", "/v1/messages", "/v1/messages/count_tokens"}


def _dialect(body: dict, path: str) -> None:
    """The same for Responses' and Anthropic's shapes: flat tools, a choice naming one of them, no
    images or thinking for the text-only model, short replies."""
    anthropic = path.startswith("/v1/messages")
    tools = body.get("tools") or []
    for tool in tools:
        tool["input_schema" if anthropic else "parameters"] = {"type": "object"}
    choice = body.get("tool_choice")
    forced = choice == "required" or (isinstance(choice, dict) and choice.get("type") != "auto")
    if forced and not tools:
        body.pop("tool_choice")
    elif isinstance(choice, dict) and "name" in choice:
        choice["name"] = tools[0]["name"]
    if tools:
        body.pop("text", None), body.pop("output_config", None)
    for holder in (body.get("text") or {}, body.get("output_config") or {}):
        if isinstance(holder.get("format"), dict) and "schema" in holder["format"]:
            holder["format"]["schema"] = {"type": "object"}
    body.pop("reasoning", None), body.pop("thinking", None)
    if not anthropic:
        body["max_output_tokens"] = 8
    turns = body.get("messages") if anthropic else body.get("input")
    for turn in turns if isinstance(turns, list) else []:
        if isinstance(turn.get("content"), list):
            turn["content"] = [p for p in turn["content"] if p.get("type") not in ("image", "input_image")]


@pytest.fixture(scope="module")
def model_digest(api_host: Host) -> str:
    with api_host.client() as c:
        return str(
            c.post("/api/browser/model", json={"model": "gemma3:270m"}).json()["files"]["model"]["digest"]
        )


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_api_conforms_to_its_openapi_document(label: str, api_host: Host, model_digest: str) -> None:
    operation = OPERATIONS[label]
    served = [0, 0]  # [errors, successes]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=16,
        derandomize=True,  # the same examples on every run: a failure here is never luck
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def conforms(case: schemathesis.Case) -> None:
        deletes = case.path == "/api/delete" or (case.path, case.method.upper()) == (
            "/v1/models/{model}",
            "DELETE",
        )
        if deletes or (case.path == "/api/pull" and "source" in (case.body or {})):
            served[1] += 1
            return  # keep the test's models in place and its pulls offline
        excluded = [positive_data_acceptance] if case.path in FREE_TEXT else []
        runnable(case, model_digest)
        response = case.call_and_validate(base_url=api_host.url, timeout=60, excluded_checks=excluded)
        if response.headers.get("content-type", [""])[0].startswith(NDJSON):
            schema = operation.definition.raw["responses"]["200"]["content"][NDJSON]["schema"]
            validator = Draft202012Validator({**schema, "components": DOCUMENT["components"]})
            for line in response.text.splitlines():
                validator.validate(json.loads(line))
        served[response.status_code < 300] += 1

    conforms()
    if operation.method.upper() != "DELETE" and label not in NO_SUCCESS:
        assert served[1] > 0, f"no generated request succeeded ({served[0]} errors)"
