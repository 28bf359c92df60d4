"""OpenAI's audio requests: transcriptions and translations as multipart forms, speech as JSON; and the
transcript's answer in each ``response_format``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from ferrousforge.errors import BadRequest, PayloadTooLarge
from ferrousforge.names import ModelName
from ferrousforge.protocol.fields import field as json_field
from ferrousforge.protocol.fields import require_object
from ferrousforge.speech import WHISPER_LANGUAGE_NAMES, Transcript, language_code, to_srt, to_vtt
from ferrousforge_host.audio.codec import FORMATS
from ferrousforge_host.config import Settings
from ferrousforge_host.http import read_json

TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")
FORM_SLACK = 1 << 20  # what a multipart body carries besides the file: field values and boundaries


@dataclass
class TranscriptionRequest:
    model: ModelName
    audio: bytes  # the uploaded file, as sent
    task: str = "transcribe"
    language: str | None = None
    prompt: str | None = None
    response_format: str = "json"
    temperature: float = 0.0
    granularities: set[str] = field(default_factory=lambda: {"segment"})
    stream: bool = False
    vad_filter: bool = True


@dataclass
class SpeechRequest:
    model: ModelName
    input: str
    voice: str = ""
    response_format: str = "mp3"
    speed: float = 1.0
    stream_format: str = "audio"


def _flag(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise BadRequest(f"'{name}' must be true or false, not '{value}'")


def _number(value: str, name: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise BadRequest(f"'{name}' must be a number, not '{value}'") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise BadRequest(f"'{name}' must be between {low:g} and {high:g}")
    return number


def _too_large(settings: Settings) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"audio upload is larger than {settings.max_audio_bytes} bytes (FERROUSFORGE_MAX_AUDIO_BYTES)"
    )


async def parse_transcription(request: Request, task: str, settings: Settings) -> TranscriptionRequest:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_audio_bytes + FORM_SLACK:
        raise _too_large(settings)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest("send the audio as multipart/form-data, the file in a part named 'file'")
    try:
        async with request.form(max_files=1, max_fields=64, max_part_size=FORM_SLACK) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise BadRequest("'file' is required: the audio, as a file part")
            if upload.size is not None and upload.size > settings.max_audio_bytes:
                raise _too_large(settings)
            audio = await upload.read()
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            granularities = [
                v
                for k, v in form.multi_items()
                if k in ("timestamp_granularities[]", "timestamp_granularities") and isinstance(v, str)
            ]
    except HTTPException as exc:  # the form parser's own complaints (too many parts, a part too large)
        raise BadRequest(f"invalid multipart form: {exc.detail}") from None
    if len(audio) > settings.max_audio_bytes:
        raise _too_large(settings)
    model = fields.get("model", "").strip()
    if not model:
        raise BadRequest("'model' is required")
    response_format = fields.get("response_format") or "json"
    if response_format not in TRANSCRIPT_FORMATS:
        raise BadRequest(f"response_format must be one of {', '.join(TRANSCRIPT_FORMATS)}")
    chosen = {g for part in granularities for g in part.split(",") if g.strip()} or {"segment"}
    if not chosen <= set(GRANULARITIES):
        raise BadRequest(f"timestamp_granularities must be among {', '.join(GRANULARITIES)}")
    if chosen != {"segment"} and response_format != "verbose_json":
        raise BadRequest("timestamp_granularities need response_format 'verbose_json'")
    stream = _flag(fields.get("stream", ""), "stream")
    if stream and response_format not in ("json", "text"):
        raise BadRequest("stream needs response_format 'json' or 'text'")
    return TranscriptionRequest(
        model=ModelName.parse(model),
        audio=audio,
        task=task,
        language=language_code(fields.get("language")),
        prompt=fields.get("prompt") or None,
        response_format=response_format,
        temperature=_number(fields.get("temperature") or "0", "temperature", 0, 1),
        granularities=chosen,
        stream=stream,
        vad_filter=_flag(fields.get("vad_filter", "true"), "vad_filter"),
    )


async def parse_speech(request: Request, settings: Settings) -> SpeechRequest:
    body = require_object(await read_json(request))
    text = json_field(body, "input", str)
    if not text.strip():
        raise BadRequest("'input' is empty: there is nothing to say")
    if len(text) > settings.max_speech_chars:
        raise BadRequest(
            f"'input' is {len(text)} characters, more than the limit of {settings.max_speech_chars} "
            "(FERROUSFORGE_MAX_SPEECH_CHARS)"
        )
    response_format = json_field(body, "response_format", str, "mp3")
    if response_format not in FORMATS:
        raise BadRequest(f"response_format must be one of {', '.join(FORMATS)}, not '{response_format}'")
    speed = json_field(body, "speed", (int, float), 1.0)
    if not math.isfinite(speed) or not 0.25 <= speed <= 4.0:
        raise BadRequest("'speed' must be between 0.25 and 4.0")
    stream_format = json_field(body, "stream_format", str, "audio")
    if stream_format not in ("audio", "sse"):
        raise BadRequest("stream_format must be 'audio' or 'sse'")
    json_field(body, "instructions", str, "")  # accepted, as OpenAI's older voices do: not used
    return SpeechRequest(
        model=ModelName.parse(json_field(body, "model", str)),
        input=text,
        voice=json_field(body, "voice", str, ""),
        response_format=response_format,
        speed=float(speed),
        stream_format=stream_format,
    )


# -- answers --------------------------------------------------------------------------------------
def usage(duration: float) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(duration)}


def verbose_json(t: Transcript, granularities: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "task": t.task,
        "language": WHISPER_LANGUAGE_NAMES.get(t.language, t.language),
        "duration": round(t.duration, 3),
        "text": t.text,
        "segments": [
            {
                "id": s.id,
                "seek": s.seek,
                "start": round(min(s.start, t.duration), 3),
                "end": round(min(s.end, t.duration), 3),  # (Whisper may end a segment past the audio)
                "text": s.text,
                "tokens": s.tokens,
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in t.segments
        ],
        "usage": usage(t.duration),
    }
    if "word" in granularities:
        out["words"] = [
            {
                "word": w.word.strip(),
                "start": round(min(w.start, t.duration), 3),
                "end": round(min(w.end, t.duration), 3),
            }
            for w in t.words
        ]
    return out


def render(t: Transcript, response_format: str, granularities: set[str]) -> tuple[Any, str]:
    """The answer's body and content type: a JSON object, or text."""
    if response_format == "json":
        return {"text": t.text, "usage": usage(t.duration)}, "application/json"
    if response_format == "verbose_json":
        return verbose_json(t, granularities), "application/json"
    if response_format == "srt":
        return to_srt(t.segments), "text/plain; charset=utf-8"
    if response_format == "vtt":
        return to_vtt(t.segments), "text/vtt; charset=utf-8"
    return t.text, "text/plain; charset=utf-8"
