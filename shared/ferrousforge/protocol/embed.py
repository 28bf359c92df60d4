"""Requests of the embedding and rerank APIs: Ollama's /api/embed, OpenAI's /v1/embeddings, and the
Cohere/Jina-shaped /api/rerank and /v1/rerank."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ferrousforge.errors import BadRequest
from ferrousforge.names import ModelName
from ferrousforge.protocol.fields import field as get
from ferrousforge.protocol.fields import require_object, token_ids

MAX_INPUTS = 2048


def _dimensions(body: dict[str, Any]) -> int | None:
    dims = get(body, "dimensions", int, None)
    if dims is not None and dims < 1:
        raise BadRequest("'dimensions' must be a positive integer")
    return dims


@dataclass
class EmbedRequest:
    model: ModelName
    inputs: list[str | list[int]]
    truncate: bool = True
    dimensions: int | None = None
    keep_alive: object = None
    options: dict[str, Any] | None = None
    encoding_format: str = "float"

    @classmethod
    def ollama(cls, raw: object) -> EmbedRequest:
        body = require_object(raw)
        value = get(body, "input", (str, list), [])
        items = ([value] if value else []) if isinstance(value, str) else value  # "": loads, as Ollama's
        if not all(isinstance(x, str) for x in items):
            raise BadRequest("'input' must be a string or a list of strings")
        return cls._checked(body, items)

    @classmethod
    def legacy(cls, raw: object) -> EmbedRequest:
        body = require_object(raw)
        prompt = get(body, "prompt", str, "")
        return cls._checked(body, [prompt] if prompt else [])  # none: the model loads, as Ollama's

    @classmethod
    def openai(cls, raw: object) -> EmbedRequest:
        body = require_object(raw)
        value = get(body, "input", (str, list))
        if isinstance(value, str):
            value = [value]
        elif value and (ids := token_ids(value)) is not None:
            value = [ids]  # one array of token ids
        items: list[str | list[int]] = []
        for item in value:
            ids = None if isinstance(item, str) else token_ids(item)
            if not isinstance(item, str) and not ids:
                raise BadRequest("'input' must be a string, a list of strings, or token id arrays")
            if item == "":
                raise BadRequest("'input' must not hold an empty string")
            items.append(item if isinstance(item, str) else ids)  # type: ignore[arg-type]
        if not items:
            raise BadRequest("'input' must not be empty")
        fmt = get(body, "encoding_format", str, "float")
        if fmt not in ("float", "base64"):
            raise BadRequest("'encoding_format' must be 'float' or 'base64'")
        req = cls._checked(body, items)
        req.encoding_format = fmt
        return req

    @classmethod
    def _checked(cls, body: dict[str, Any], items: list[Any]) -> EmbedRequest:
        if len(items) > MAX_INPUTS:
            raise BadRequest(f"at most {MAX_INPUTS} inputs per request")
        return cls(
            model=ModelName.parse(get(body, "model", str)),
            inputs=items,
            truncate=get(body, "truncate", bool, True),
            dimensions=_dimensions(body),
            keep_alive=get(body, "keep_alive", (str, int, float), None),
            options=get(body, "options", dict, None),
        )


@dataclass
class RerankRequest:
    model: ModelName
    query: str
    documents: list[str]
    top_n: int | None = None
    return_documents: bool = True
    truncate: bool = True
    keep_alive: object = None
    options: dict[str, Any] | None = None  # Ollama's request options (engine, num_thread, ...)

    @classmethod
    def parse(cls, raw: object) -> RerankRequest:
        body = require_object(raw)
        docs = []
        for i, doc in enumerate(get(body, "documents", list)):
            if isinstance(doc, dict) and isinstance(doc.get("text"), str):
                doc = doc["text"]
            if not isinstance(doc, str):
                raise BadRequest(f"documents[{i}] must be a string or an object with 'text'")
            docs.append(doc)
        if len(docs) > MAX_INPUTS:
            raise BadRequest(f"at most {MAX_INPUTS} documents per request")
        top_n = get(body, "top_n", int, None)
        if top_n is not None and top_n < 1:
            raise BadRequest("'top_n' must be at least 1")
        return cls(
            model=ModelName.parse(get(body, "model", str)),
            query=get(body, "query", str),
            documents=docs,
            top_n=top_n,
            return_documents=get(body, "return_documents", bool, True),
            truncate=get(body, "truncate", bool, True),
            keep_alive=get(body, "keep_alive", (str, int, float), None),
            options=get(body, "options", dict, None),
        )


def rerank_results(req: RerankRequest, scores: list[float]) -> list[dict[str, Any]]:
    """Cohere/Jina-shaped results: best first, ``top_n`` of them, documents when asked for."""
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)[: req.top_n]
    results = []
    for i in order:
        row: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if req.return_documents:
            row["document"] = {"text": req.documents[i]}
        results.append(row)
    return results


def rerank_body(
    query: str, documents: list[str], model: str, top_n: int | None = None, return_documents: bool = True
) -> dict[str, Any]:
    """A rerank request as the SDK clients send it."""
    body: dict[str, Any] = {
        "model": model,
        "query": query,
        "documents": documents,
        "return_documents": return_documents,
    }
    if top_n is not None:
        body["top_n"] = top_n
    return body
