"""OpenAI's audio endpoints: /v1/audio/transcriptions, /v1/audio/translations and /v1/audio/speech.

Each awaits its stream's first item before the status line, so that a bad request, an unknown model
or a failed load is a proper error answer; after that, audio and transcript deltas leave as made."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ferrousforge.errors import BadRequest, ForgeError
from ferrousforge.speech import AudioFacts, Segment, SpeechChunk, Transcript, join_text
from ferrousforge_host.audio.codec import Encoder
from ferrousforge_host.audio.protocol import (
    SpeechRequest,
    parse_speech,
    parse_transcription,
    render,
    usage,
)
from ferrousforge_host.audio.serving import AudioService
from ferrousforge_host.http import JSONResponse, printable

log = logging.getLogger("ferrousforge")


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _service(request: Request) -> AudioService:
    service: AudioService = request.app.state.audio
    return service


async def _transcript(request: Request, task: str) -> Response:
    settings = request.app.state.settings
    req = await parse_transcription(request, task, settings)
    items = _service(request).transcribe(req)
    first = await anext(items)  # decoded, loaded, language known: errors so far are proper answers
    facts = first if isinstance(first, AudioFacts) else AudioFacts(req.language or "", 0.0, 0.0, 0.0)
    if req.stream:
        return StreamingResponse(_deltas(items, first, facts), media_type="text/event-stream")
    segments = [first] if isinstance(first, Segment) else []
    segments += [s async for s in items if isinstance(s, Segment)]
    transcript = Transcript(join_text(segments), facts.language, facts.duration, segments, task)
    body, content_type = render(transcript, req.response_format, req.granularities)
    if isinstance(body, dict):
        return JSONResponse(body)
    return Response(body, media_type=content_type)


async def _deltas(
    items: AsyncIterator[AudioFacts | Segment], first: AudioFacts | Segment, facts: AudioFacts
) -> AsyncIterator[bytes]:
    """OpenAI's transcript stream: a ``transcript.text.delta`` per segment, then ``transcript.text.done``."""
    segments: list[Segment] = []
    try:
        pending = [first] if isinstance(first, Segment) else []
        async for item in _chain(pending, items):
            delta = item.text.lstrip() if not segments else item.text
            segments.append(item)
            yield _sse({"type": "transcript.text.delta", "delta": delta})
        text = join_text(segments)
        yield _sse({"type": "transcript.text.done", "text": text, "usage": usage(facts.duration)})
    except ForgeError as exc:  # after the status line, an error travels in the stream
        yield _sse({"type": "error", "error": {"message": printable(exc.message), "type": "server_error"}})
    finally:
        await _close(items)


async def _close(stream: AsyncIterator[object]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def _chain(head: list[Segment], rest: AsyncIterator[AudioFacts | Segment]) -> AsyncIterator[Segment]:
    for segment in head:
        yield segment
    async for item in rest:
        if isinstance(item, Segment):
            yield item


async def transcriptions(request: Request) -> Response:
    return await _transcript(request, "transcribe")


async def translations(request: Request) -> Response:
    return await _transcript(request, "translate")


async def speech(request: Request) -> Response:
    req = await parse_speech(request, request.app.state.settings)
    chunks = _service(request).speak(req)
    first = await anext(chunks, None)  # loaded and the first sentence made: errors so far are answers
    while first is not None and not first.pcm:  # a "sentence" of punctuation alone says nothing
        first = await anext(chunks, None)
    if first is None:
        await _close(chunks)
        raise BadRequest(f"'input' has no words to speak: {req.input[:40]!r}")
    encoder = Encoder(req.response_format, first.sample_rate)
    body = _audio(req, encoder, first, chunks)
    if req.stream_format == "sse":
        return StreamingResponse(_audio_events(body), media_type="text/event-stream")
    return StreamingResponse(body, media_type=encoder.content_type)


async def _audio(
    req: SpeechRequest, encoder: Encoder, first: SpeechChunk | None, rest: AsyncIterator[SpeechChunk]
) -> AsyncIterator[bytes]:
    try:
        if first is not None:
            yield encoder.feed(first.pcm)
        async for chunk in rest:
            if data := encoder.feed(chunk.pcm):
                yield data
    except ForgeError as exc:  # the status line is sent: the audio ends short, and the log says why
        log.warning("speech for model '%s' ended early: %s", req.model, exc.message)
    finally:
        await _close(rest)  # a client that went away frees the model now, not when collected
    yield encoder.close()


async def _audio_events(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """OpenAI's ``stream_format: "sse"``: the encoded audio in base64 deltas, then a done event."""
    async for data in body:
        if data:
            yield _sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
    yield _sse(
        {"type": "speech.audio.done", "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}
    )


routes = [
    Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
    Route("/v1/audio/translations", translations, methods=["POST"]),
    Route("/v1/audio/speech", speech, methods=["POST"]),
]
