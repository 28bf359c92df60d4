"""The speech Mold kinds: transcription (speech → text) and speech (text → speech).

Audio crosses a Mold's boundary as raw PCM bytes, so this module stays pure Python (Pyodide):
transcription takes mono float32 little-endian samples at 16 kHz (the host decodes uploads with
PyAV, a page with WebAudio); speech yields mono 16-bit PCM at the voice's own rate, one chunk per
sentence as it is synthesized.

An engine implements one synchronous generator per kind (``transcribe_sync``: the facts about the
audio first, then segments as they are decoded; ``synthesize_sync``: chunks); the base class runs it
on the Mold's worker, checks requests against what the model declares (languages, voices), and
collects a whole transcript.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ferrousforge.errors import BadRequest
from ferrousforge.mold import Capability, Mold

SAMPLE_RATE = 16_000  # what Whisper listens at
# the languages multilingual Whisper models (tiny to large-v2) know: code → the name OpenAI's answers use
_LANGUAGE_TABLE = (
    "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese "
    "pt:portuguese tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian "
    "id:indonesian hi:hindi fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek ms:malay "
    "cs:czech ro:romanian da:danish hu:hungarian ta:tamil no:norwegian th:thai ur:urdu hr:croatian "
    "bg:bulgarian lt:lithuanian la:latin mi:maori ml:malayalam cy:welsh sk:slovak te:telugu "
    "fa:persian lv:latvian bn:bengali sr:serbian az:azerbaijani sl:slovenian kn:kannada et:estonian "
    "mk:macedonian br:breton eu:basque is:icelandic hy:armenian ne:nepali mn:mongolian bs:bosnian "
    "kk:kazakh sq:albanian sw:swahili gl:galician mr:marathi pa:punjabi si:sinhala km:khmer "
    "sn:shona yo:yoruba so:somali af:afrikaans oc:occitan ka:georgian be:belarusian tg:tajik "
    "sd:sindhi gu:gujarati am:amharic yi:yiddish lo:lao uz:uzbek fo:faroese ht:haitian_creole "
    "ps:pashto tk:turkmen nn:nynorsk mt:maltese sa:sanskrit lb:luxembourgish my:myanmar bo:tibetan "
    "tl:tagalog mg:malagasy as:assamese tt:tatar haw:hawaiian ln:lingala ha:hausa ba:bashkir "
    "jw:javanese su:sundanese"
)
WHISPER_LANGUAGE_NAMES = {
    code: name.replace("_", " ") for code, name in (pair.split(":") for pair in _LANGUAGE_TABLE.split())
}
WHISPER_LANGUAGES = sorted(WHISPER_LANGUAGE_NAMES)
_CODES = {name: code for code, name in WHISPER_LANGUAGE_NAMES.items()}
MAX_SPEECH_CHARS = 4096  # text to speak in one request: OpenAI's limit (the host's default too)


def language_code(value: str | None) -> str | None:
    """An ISO 639-1 code ("en"), or Whisper's name for the language ("english"), as a code."""
    if not value or not value.strip():
        return None
    lowered = value.strip().lower()
    return _CODES.get(lowered, lowered)


# OpenAI's voice names: an unmodified client sends one of these; each maps onto one of the model's voices
OPENAI_VOICES = (
    "alloy",
    "echo",
    "fable",
    "onyx",
    "nova",
    "shimmer",
    "ash",
    "sage",
    "coral",
    "ballad",
    "verse",
)


@dataclass(frozen=True)
class Word:
    start: float
    end: float
    word: str
    probability: float = 1.0


@dataclass
class Segment:
    id: int
    start: float  # seconds from the start of the audio
    end: float
    text: str
    words: list[Word] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    seek: int = 0  # where its 30 s window began, in 10 ms frames
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float = 0.0


@dataclass(frozen=True)
class TranscriptionInput:
    audio: bytes  # mono float32 little-endian samples at SAMPLE_RATE
    language: str | None = None  # None: detected
    task: str = "transcribe"  # "translate": into English
    prompt: str | None = None
    temperature: float = 0.0
    word_timestamps: bool = False
    vad_filter: bool = True  # skip the silences (Silero VAD) before decoding

    @property
    def duration(self) -> float:
        return len(self.audio) / 4 / SAMPLE_RATE


@dataclass(frozen=True)
class AudioFacts:
    """What the engine learnt before decoding: the first item of a transcription."""

    language: str
    language_probability: float
    duration: float
    duration_after_vad: float


@dataclass
class Transcript:
    text: str
    language: str
    duration: float
    segments: list[Segment]
    task: str = "transcribe"

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]


def join_text(segments: list[Segment]) -> str:
    return "".join(s.text for s in segments).strip()


class TranscriptionMold(Mold):
    task: ClassVar[str] = "transcription"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.TRANSCRIPTION})

    @abstractmethod
    def transcribe_sync(self, request: TranscriptionInput) -> Iterator[AudioFacts | Segment]:
        """Engine primitive: the audio's facts, then each segment as it is decoded."""

    def check(self, request: TranscriptionInput) -> None:
        check_transcription(self.spec.name, self.spec.config, request)

    async def transcribe_stream(self, request: TranscriptionInput) -> AsyncIterator[AudioFacts | Segment]:
        self.check(request)
        async for item in self.iterate_in_worker(lambda: self.transcribe_sync(request)):
            yield item

    async def transcribe(self, request: TranscriptionInput) -> Transcript:
        facts: AudioFacts | None = None
        segments: list[Segment] = []
        async for item in self.transcribe_stream(request):
            if isinstance(item, AudioFacts):
                facts = item
            else:
                segments.append(item)
        language = facts.language if facts else request.language or ""
        duration = facts.duration if facts else request.duration
        return Transcript(join_text(segments), language, duration, segments, request.task)


def check_transcription(name: str, config: dict[str, Any], request: TranscriptionInput) -> None:
    """A request the model can serve: a language it knows; translation only by a multilingual model."""
    languages = config.get("languages") or []
    if request.language and languages and request.language not in languages:
        shown = ", ".join(languages[:12]) + (", ..." if len(languages) > 12 else "")
        raise BadRequest(f"model '{name}' does not know language '{request.language}' (knows: {shown})")
    if request.task == "translate" and not config.get("multilingual", True):
        raise BadRequest(f"model '{name}' is English-only: it cannot translate (use a multilingual model)")
    if request.task not in ("transcribe", "translate"):
        raise BadRequest(f"task must be 'transcribe' or 'translate', not '{request.task}'")


@dataclass(frozen=True)
class SpeechInput:
    text: str
    voice: str = ""  # one of the model's own voices ("": its first)
    speed: float = 1.0  # 0.25 to 4.0, as OpenAI's


@dataclass(frozen=True)
class SpeechChunk:
    pcm: bytes  # mono signed 16-bit little-endian samples
    sample_rate: int
    text: str = ""  # the sentence it speaks

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


def resolve_voice(name: str | None, voices: list[str], model: str = "") -> str:
    """The model's voice for a requested name: one of its own, or an OpenAI name mapped onto them in
    order (the first OpenAI voice → its first voice, and round again); None or "" → its first."""
    if not voices:
        raise BadRequest(f"model '{model}' declares no voices")
    if not name:
        return voices[0]
    if name in voices:
        return name
    lowered = {v.lower(): v for v in voices}
    if name.lower() in lowered:
        return lowered[name.lower()]
    if name.lower() in OPENAI_VOICES:
        return voices[OPENAI_VOICES.index(name.lower()) % len(voices)]
    raise BadRequest(
        f"unknown voice '{name}' for model '{model}' (its voices: {', '.join(voices)}; "
        f"or one of OpenAI's: {', '.join(OPENAI_VOICES)})"
    )


class SpeechMold(Mold):
    task: ClassVar[str] = "speech"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.SPEECH})

    @abstractmethod
    def synthesize_sync(self, request: SpeechInput) -> Iterator[SpeechChunk]:
        """Engine primitive: audio for the text, one chunk per sentence as each is synthesized."""

    def voices(self) -> list[str]:
        return list(self.spec.config.get("voices") or [])

    async def synthesize(self, request: SpeechInput) -> AsyncIterator[SpeechChunk]:
        voice = resolve_voice(request.voice, self.voices(), self.spec.name)
        if not 0.25 <= request.speed <= 4.0:
            raise BadRequest("speed must be between 0.25 and 4.0")
        asked = SpeechInput(request.text, voice, request.speed)
        async for chunk in self.iterate_in_worker(lambda: self.synthesize_sync(asked)):
            yield chunk


# -- transcripts as subtitles ---------------------------------------------------------------------
def timestamp(seconds: float, separator: str) -> str:
    """``HH:MM:SS,mmm`` (SRT, separator ",") or ``HH:MM:SS.mmm`` (WebVTT, ".")."""
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{separator}{ms:03d}"


def to_srt(segments: list[Segment]) -> str:
    cues = [
        f"{i}\n{timestamp(s.start, ',')} --> {timestamp(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(segments, 1)
    ]
    return "\n".join(cues)


def to_vtt(segments: list[Segment]) -> str:
    cues = [f"{timestamp(s.start, '.')} --> {timestamp(s.end, '.')}\n{s.text.strip()}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)
