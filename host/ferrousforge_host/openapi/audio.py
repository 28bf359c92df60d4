"""Schemas of OpenAI's audio endpoints: transcription forms (multipart) and answers, speech requests."""

from __future__ import annotations

from ferrousforge.speech import OPENAI_VOICES
from ferrousforge_host.audio.codec import FORMATS
from ferrousforge_host.audio.protocol import GRANULARITIES, TRANSCRIPT_FORMATS
from ferrousforge_host.openapi.schemas import MODEL_NAME, NUMBER, STRING, Schema, array, obj, ref

USAGE = obj(("type", "seconds"), type={"enum": ["duration"]}, seconds={"type": "integer", "minimum": 0})


def transcription_form(translation: bool) -> Schema:
    form = obj(
        ("file", "model"),
        file={
            "type": "string",
            "format": "binary",
            "description": "the audio: wav, mp3, ogg, webm/opus, m4a, flac (anything FFmpeg reads)",
        },
        model=MODEL_NAME,
        language={
            "type": "string",
            "description": "ISO 639-1 code (or Whisper's name for it); none: detected",
        },
        prompt={"type": "string", "description": "text the speech follows on from (names, spellings)"},
        response_format={"enum": list(TRANSCRIPT_FORMATS), "default": "json"},
        temperature={"type": "number", "minimum": 0, "maximum": 1, "default": 0},
        vad_filter={"type": "boolean", "default": True, "description": "skip silences (Silero VAD) first"},
    )
    if not translation:
        form["properties"] |= {
            "timestamp_granularities[]": array({"enum": list(GRANULARITIES)}),
            "stream": {"type": "boolean", "default": False, "description": "server-sent transcript deltas"},
        }
    return form


AUDIO: dict[str, Schema] = {
    "TranscriptionForm": transcription_form(False),
    "TranslationForm": transcription_form(True),
    "Transcription": obj(("text",), text=STRING, usage=USAGE),
    "TranscriptionVerbose": obj(
        ("task", "language", "duration", "text", "segments"),
        task={"enum": ["transcribe", "translate"]},
        language={"type": "string", "description": "the language's name, e.g. english"},
        duration=NUMBER,
        text=STRING,
        segments=array(
            obj(
                ("id", "start", "end", "text"),
                id={"type": "integer"},
                seek={"type": "integer"},
                start=NUMBER,
                end=NUMBER,
                text=STRING,
                tokens=array({"type": "integer"}),
                temperature=NUMBER,
                avg_logprob=NUMBER,
                compression_ratio=NUMBER,
                no_speech_prob=NUMBER,
            )
        ),
        words=array(obj(("word", "start", "end"), word=STRING, start=NUMBER, end=NUMBER)),
        usage=USAGE,
    ),
    "SpeechRequest": obj(
        ("model", "input"),
        model=MODEL_NAME,
        input={"type": "string", "minLength": 1, "description": "at most max_speech_chars (4096) characters"},
        voice={
            "type": "string",
            "description": "one of the model's voices, or an OpenAI name mapped onto them: "
            + ", ".join(OPENAI_VOICES),
        },
        response_format={"enum": list(FORMATS), "default": "mp3"},
        speed={"type": "number", "minimum": 0.25, "maximum": 4.0, "default": 1.0},
        stream_format={"enum": ["audio", "sse"], "default": "audio"},
        instructions={"type": "string", "description": "accepted and ignored"},
    ),
}
TRANSCRIPT_ANSWER: Schema = {"anyOf": [ref("Transcription"), ref("TranscriptionVerbose")]}
