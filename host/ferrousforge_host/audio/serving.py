"""Transcription and speech: one handler each, for OpenAI's audio endpoints and the CLI.

A request is checked against what the model declares (kind, languages, voices) before the model is
loaded; the audio is decoded off the event loop; the model is held for as long as its stream runs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ferrousforge.mold import ModelSpec
from ferrousforge.speech import (
    AudioFacts,
    Segment,
    SpeechChunk,
    SpeechInput,
    SpeechMold,
    TranscriptionInput,
    TranscriptionMold,
    check_transcription,
    resolve_voice,
)
from ferrousforge_host.audio.codec import decode
from ferrousforge_host.audio.protocol import SpeechRequest, TranscriptionRequest
from ferrousforge_host.config import Settings
from ferrousforge_host.embed.serving import require_kind
from ferrousforge_host.scheduler import Scheduler


class AudioService:
    def __init__(self, scheduler: Scheduler, keep_alive: float | None, settings: Settings) -> None:
        self.scheduler = scheduler
        self.keep_alive = keep_alive
        self.settings = settings

    def _spec(self, req: TranscriptionRequest | SpeechRequest, kind: type, what: str) -> ModelSpec:
        spec, _ = self.scheduler.spec(req.model)
        require_kind(spec, req.model, kind, what)
        return spec

    async def transcribe(self, req: TranscriptionRequest) -> AsyncIterator[AudioFacts | Segment]:
        """The audio's facts, then its segments as they are decoded."""
        spec = self._spec(req, TranscriptionMold, "transcription")
        samples = await asyncio.to_thread(decode, req.audio, self.settings.max_audio_seconds)
        request = TranscriptionInput(
            samples,
            language=req.language,
            task=req.task,
            prompt=req.prompt,
            temperature=req.temperature,
            word_timestamps="word" in req.granularities,
            vad_filter=req.vad_filter,
        )
        check_transcription(spec.name, spec.config, request)  # before a load, not after
        options = self.scheduler.options(spec, None)
        async with self.scheduler.use(req.model, options, self.keep_alive) as (runner, _):
            assert isinstance(runner.mold, TranscriptionMold)
            async for item in runner.mold.transcribe_stream(request):
                yield item

    async def speak(self, req: SpeechRequest) -> AsyncIterator[SpeechChunk]:
        """The speech, one chunk per sentence as each is synthesized."""
        spec = self._spec(req, SpeechMold, "speech")
        voice = resolve_voice(req.voice, list(spec.config.get("voices") or []), spec.name)
        options = self.scheduler.options(spec, None)
        async with self.scheduler.use(req.model, options, self.keep_alive) as (runner, _):
            assert isinstance(runner.mold, SpeechMold)
            async for chunk in runner.mold.synthesize(SpeechInput(req.input, voice, req.speed)):
                yield chunk
