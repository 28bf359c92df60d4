"""The OpenAPI document: one entry per route, bodies from ``schemas``."""

from __future__ import annotations

from functools import cache
from typing import Any

import ferrousforge
from ferrousforge_host.audio.codec import FORMATS
from ferrousforge_host.openapi.audio import AUDIO, TRANSCRIPT_ANSWER
from ferrousforge_host.openapi.dialects import ANTHROPIC, RESPONSES
from ferrousforge_host.openapi.schemas import COMPONENTS, MODEL_NAME, PROGRESS, Schema, ref

JSON = "application/json"
NDJSON = "application/x-ndjson"

# Error statuses every JSON endpoint can answer, besides its own.
COMMON_ERRORS = {
    "400": "malformed JSON, wrong types, out-of-range values, bad names",
    "401": "API keys are on and the request has none or a wrong one",
    "403": "a browser origin that is not allowed",
    "413": "the body is larger than the server's limit",
}
MODEL_ERRORS = {"404": "no such model", "503": "too many requests queued; retry later (Retry-After)"}


def _errors(path: str, statuses: dict[str, str]) -> dict[str, Any]:
    body = {"anyOf": [ref("OpenAIError"), ref("Error")]} if path.startswith("/v1/") else ref("Error")
    if path.startswith("/v1/messages"):
        body = {"anyOf": [ref("AnthropicError"), ref("Error")]}
    return {code: {"description": why, "content": {JSON: {"schema": body}}} for code, why in statuses.items()}


def _json(schema: Schema, description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _streamed(final: Schema, line: Schema, description: str) -> dict[str, Any]:
    """A JSON object with ``stream: false``, else NDJSON lines (an error mid-stream is a last line)."""
    return {
        "description": description,
        "content": {JSON: {"schema": final}, NDJSON: {"schema": {"anyOf": [line, ref("Error")]}}},
    }


def _op(
    path: str,
    summary: str,
    tag: str,
    ok: dict[str, Any],
    body: str | None = None,
    errors: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    statuses = {**(COMMON_ERRORS if body else {"401": COMMON_ERRORS["401"], "403": COMMON_ERRORS["403"]})}
    statuses |= errors or {}
    op: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "responses": {"200": ok, **_errors(path, statuses)},
        **extra,
    }
    if body:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": ref(body)}}}
    return op


DIGEST_PARAM = {
    "name": "digest",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^sha256[:-][0-9a-f]{64}$"},
}
TEXT = {"text/plain": {"schema": {"type": "string"}}}
EVENTS = {  # each server-sent event: data is a chunk's JSON, the last one "[DONE]"
    "text/event-stream": {
        "schema": {"type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}
    }
}


def _paths() -> dict[str, dict[str, Any]]:
    p = _op  # short
    return {
        "/": {
            "get": {
                "summary": "Is the server up?",
                "tags": ["server"],
                "responses": {"200": {"description": "FerrousForge is running", "content": TEXT}},
            },
            "head": {
                "summary": "Is the server up?",
                "tags": ["server"],
                "responses": {"200": {"description": "up"}},
            },
        },
        "/api/version": {
            "get": {
                "summary": "Server version",
                "tags": ["server"],
                "responses": {"200": _json(ref("Version"))},
            }
        },
        "/api/info": {
            "get": {
                "summary": "The CPU, GPUs and engine builds, and what each loaded model runs on",
                "tags": ["server"],
                "responses": {"200": _json(ref("Info"))},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "tags": ["server"],
                "responses": {"200": _json({"type": "object"})},
            }
        },
        "/metrics": {
            "get": p("/metrics", "Prometheus metrics", "server", {"description": "metrics", "content": TEXT})
        },
        "/api/generate": {
            "post": p(
                "/api/generate",
                "Generate a completion (an empty prompt loads the model, with keep_alive 0 unloads it)",
                "generate",
                _streamed(ref("GenerateResponse"), ref("GenerateResponse"), "one object, or NDJSON chunks"),
                "GenerateRequest",
                MODEL_ERRORS,
            )
        },
        "/api/chat": {
            "post": p(
                "/api/chat",
                "Chat with a model through its chat template",
                "generate",
                _streamed(ref("ChatResponse"), ref("ChatResponse"), "one object, or NDJSON chunks"),
                "ChatRequest",
                MODEL_ERRORS,
            )
        },
        "/api/embed": {
            "post": p(
                "/api/embed",
                "Embed texts",
                "embed",
                _json(ref("EmbedResponse")),
                "EmbedRequest",
                MODEL_ERRORS,
            )
        },
        "/api/embeddings": {
            "post": p(
                "/api/embeddings",
                "Embed one text (legacy)",
                "embed",
                _json(ref("LegacyEmbeddingResponse")),
                "LegacyEmbeddingRequest",
                MODEL_ERRORS,
            )
        },
        "/api/rerank": {
            "post": p(
                "/api/rerank",
                "Rank documents against a query",
                "embed",
                _json(ref("RerankResponse")),
                "RerankRequest",
                MODEL_ERRORS,
            )
        },
        "/api/tags": {"get": p("/api/tags", "Models in the store", "models", _json(ref("Tags")))},
        "/api/ps": {"get": p("/api/ps", "Loaded models", "models", _json(ref("Running")))},
        "/api/show": {
            "post": p(
                "/api/show",
                "A model's details",
                "models",
                _json(ref("Show")),
                "ModelRequest",
                {"404": "no such model"},
            )
        },
        "/api/delete": {
            method: p(
                "/api/delete",
                "Delete a model (and unload it)",
                "models",
                _json({"type": "object"}),
                "ModelRequest",
                {"404": "no such model"},
                operationId=f"delete_{method}",
            )
            for method in ("delete", "post")
        },
        "/api/copy": {
            "post": p(
                "/api/copy",
                "Copy a model",
                "models",
                _json({"type": "object"}),
                "CopyRequest",
                {"404": "no source"},
            )
        },
        "/api/pull": {
            "post": p(
                "/api/pull",
                "Pull a model from the catalogue, a URL, a path in an import folder or hf.co",
                "models",
                _streamed(PROGRESS, PROGRESS, "the last status, or NDJSON progress events"),
                "PullRequest",
                {"404": "unknown model", "502": "the source failed", "507": "the store's disk is full"},
            )
        },
        "/api/push": {
            "post": p(
                "/api/push",
                "Push a model to an OCI registry of one's own (blobs it lacks, then the manifest)",
                "models",
                _streamed(PROGRESS, PROGRESS, "the last status, or NDJSON progress events"),
                "PushRequest",
                {
                    "403": "no registry here, or Ollama's own (pushes signed with an ollama.com key only)",
                    "404": "unknown model",
                    "502": "the registry failed or refused",
                },
            )
        },
        "/api/create": {
            "post": p(
                "/api/create",
                "Create a model from another, from uploaded blobs, or from a Modelfile",
                "models",
                _streamed(PROGRESS, PROGRESS, "the last status, or NDJSON progress events"),
                "CreateRequest",
                {"404": "no base model or blob", "507": "the store's disk is full"},
            )
        },
        "/api/blobs/{digest}": {
            "parameters": [DIGEST_PARAM],
            "head": {
                "summary": "Is this blob in the store?",
                "tags": ["models"],
                "responses": {"200": {"description": "present"}, "404": {"description": "absent"}},
            },
            "post": {
                "summary": "Upload a blob; kept only if its sha256 matches",
                "tags": ["models"],
                "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {}}}},
                "responses": {
                    "200": {"description": "already present"},
                    "201": {"description": "stored"},
                    **_errors("/api/blobs", {**COMMON_ERRORS, "507": "the store's disk is full"}),
                },
            },
            "get": {
                "summary": "The blob's bytes, for browsers (Range, immutable caching)",
                "tags": ["browser"],
                "responses": {
                    "200": {
                        "description": "the bytes",
                        "content": {"application/octet-stream": {"schema": {}}},
                    },
                    "206": {
                        "description": "a range",
                        "content": {"application/octet-stream": {"schema": {}}},
                    },
                    **_errors(
                        "/api/blobs", {"400": "not a digest", "404": "no such blob", "416": "bad range"}
                    ),
                },
            },
        },
        "/api/browser/model": {
            "post": p(
                "/api/browser/model",
                "What a browser needs to run a model: files by digest, config, requirements",
                "browser",
                _json(ref("BrowserModel")),
                "BrowserModelRequest",
                {"404": "no such model"},
            )
        },
        "/v1/chat/completions": {
            "post": p(
                "/v1/chat/completions",
                "OpenAI chat completions",
                "openai",
                {
                    "description": "a completion, or server-sent events ending with data: [DONE]",
                    "content": {JSON: {"schema": ref("ChatCompletion")}, **EVENTS},
                },
                "ChatCompletionRequest",
                MODEL_ERRORS,
            )
        },
        "/v1/completions": {
            "post": p(
                "/v1/completions",
                "OpenAI completions (raw prompt)",
                "openai",
                {
                    "description": "a completion, or server-sent events ending with data: [DONE]",
                    "content": {JSON: {"schema": ref("Completion")}, **EVENTS},
                },
                "CompletionRequest",
                MODEL_ERRORS,
            )
        },
        "/v1/responses": {
            "post": p(
                "/v1/responses",
                "OpenAI Responses API (stateless: no previous_response_id)",
                "openai",
                {
                    "description": "a response, or server-sent events (response.created … .completed)",
                    "content": {JSON: {"schema": ref("Response")}, **EVENTS},
                },
                "ResponsesRequest",
                MODEL_ERRORS,
            )
        },
        "/v1/messages": {
            "post": p(
                "/v1/messages",
                "Anthropic Messages API",
                "anthropic",
                {
                    "description": "a message, or named server-sent events (message_start … message_stop)",
                    "content": {JSON: {"schema": ref("AnthropicMessage")}, **EVENTS},
                },
                "MessagesRequest",
                MODEL_ERRORS,
            )
        },
        "/v1/messages/count_tokens": {
            "post": p(
                "/v1/messages/count_tokens",
                "Anthropic token count of a prompt (evaluates it; it stays cached)",
                "anthropic",
                _json(ref("TokenCount")),
                "CountTokensRequest",
                MODEL_ERRORS,
            )
        },
        "/v1/embeddings": {
            "post": p(
                "/v1/embeddings",
                "OpenAI embeddings",
                "openai",
                _json(ref("OpenAIEmbeddingResponse")),
                "OpenAIEmbeddingRequest",
                MODEL_ERRORS,
            )
        },
        "/v1/rerank": {
            "post": p(
                "/v1/rerank",
                "Rerank (Cohere/Jina shape)",
                "openai",
                _json(ref("RerankResponse")),
                "RerankRequest",
                MODEL_ERRORS,
            )
        },
        **_audio_paths(),
        "/v1/models": {"get": p("/v1/models", "OpenAI model list", "openai", _json(ref("ModelList")))},
        "/v1/models/{model}": {
            "parameters": [{"name": "model", "in": "path", "required": True, "schema": MODEL_NAME}],
            "get": p(
                "/v1/models/{model}",
                "One model",
                "openai",
                _json(ref("Model")),
                errors={"404": "no such model"},
            ),
            "delete": p(
                "/v1/models/{model}",
                "Delete a model (as /api/delete)",
                "openai",
                _json(ref("ModelDeleted")),
                errors={"404": "no such model"},
            ),
        },
    }


AUDIO_ERRORS = {
    **MODEL_ERRORS,
    "400": "not audio, empty, longer than max_audio_seconds, a language or voice the model lacks, a model "
    "of another kind, a bad field",
    "413": "the upload is larger than max_audio_bytes",
}


def _audio_paths() -> dict[str, dict[str, Any]]:
    """OpenAI's audio endpoints: multipart forms in, a transcript out; JSON in, audio streamed out."""

    def transcript(path: str, summary: str, form: str) -> dict[str, Any]:
        answer = {
            "description": "json/verbose_json: an object; text/srt/vtt: text; stream: transcript events",
            "content": {
                JSON: {"schema": TRANSCRIPT_ANSWER},
                "text/plain": {"schema": {"type": "string"}},
                "text/vtt": {"schema": {"type": "string"}},
                **EVENTS,
            },
        }
        op = _op(path, summary, "audio", answer, "x", AUDIO_ERRORS)
        op["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": ref(form)}}}
        return {"post": op}

    audio = {"schema": {"type": "string", "format": "binary"}}
    speech = {
        "description": "the audio, streamed as it is made (pcm: 16-bit mono at 24 kHz), or sse events",
        "content": {
            **{content_type.split(";")[0]: audio for content_type, _, _ in FORMATS.values()},
            **EVENTS,
        },
    }
    return {
        "/v1/audio/transcriptions": transcript(
            "/v1/audio/transcriptions", "Transcribe audio (Whisper)", "TranscriptionForm"
        ),
        "/v1/audio/translations": transcript(
            "/v1/audio/translations",
            "Translate speech into English text (multilingual Whisper)",
            "TranslationForm",
        ),
        "/v1/audio/speech": {
            "post": _op(
                "/v1/audio/speech", "Speak text (Piper)", "audio", speech, "SpeechRequest", AUDIO_ERRORS
            )
        },
    }


@cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "FerrousForge",
            "version": ferrousforge.__version__,
            "description": 'Ollama- and OpenAI-compatible local model server. Errors are {"error": ...} '
            "(OpenAI's error object on /v1/ paths, Anthropic's on /v1/messages). The demo site and browser "
            "runtime are served under /ui/.",
        },
        "servers": [{"url": "/"}],
        "components": {
            "schemas": COMPONENTS | RESPONSES | ANTHROPIC | AUDIO,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
        "paths": _paths(),
    }
