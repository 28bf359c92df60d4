"""Whisper in the page: the ONNX graphs the host wrote when the model was pulled, on onnxruntime-web
(its wasm or WebGPU execution provider). Python picks the prompt, walks the audio in 30 s windows and
turns tokens into text; the numbers stay in JS (``web/whisper.mjs``). Decoding is greedy without
timestamps, one segment a window."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

from ferrousforge.browser.bridge import absent, helpers, jsobj
from ferrousforge.browser.whisper_tokens import WhisperTokens
from ferrousforge.errors import ForgeError, NotSupported
from ferrousforge.mold import ModelSpec
from ferrousforge.options import Options
from ferrousforge.placement import BROWSER_WEBGPU
from ferrousforge.speech import (
    SAMPLE_RATE,
    AudioFacts,
    Segment,
    Transcript,
    TranscriptionInput,
    TranscriptionMold,
    check_transcription,
    join_text,
)

GRAPHS = ("whisper-mel.onnx", "whisper-encoder.onnx", "whisper-decoder.onnx")
WINDOW = 3000  # mel frames: 30 s
MAX_TOKENS = 224  # OpenAI's: half the decoder's context for a window's text
WINDOW_TOKENS = 100  # a 30 s window of speech is ~100 tokens: the measured window's decoding work
MEASURE_STEPS = 8  # decoder steps timed by ``measure``


class WebWhisperMold(TranscriptionMold):
    engine = "onnxruntime-web"
    formats = ("ctranslate2",)
    web_files: ClassVar[tuple[str, ...]] = ("config.json", "vocabulary.txt", *GRAPHS)  # not model.bin

    def __init__(self, spec: ModelSpec, options: Options, accelerator: str, files: dict[str, Any]) -> None:
        super().__init__(spec, options)
        self.accelerator = accelerator
        self.files = files
        self.threads = options.num_thread or 1
        self.ep = "webgpu" if accelerator == BROWSER_WEBGPU else "wasm"
        self.sessions: Any = None
        self.tokens: WhisperTokens | None = None

    def load_sync(self) -> None:
        raise NotSupported("browser Molds load asynchronously")

    def unload_sync(self) -> None:
        raise NotSupported("browser Molds unload asynchronously")

    def transcribe_sync(self, request: TranscriptionInput) -> Iterator[AudioFacts | Segment]:
        raise NotSupported("use transcribe_samples()")

    async def load(self) -> None:
        forge_js = helpers()
        missing = [n for n in (*GRAPHS, "vocabulary.txt", "config.json") if n not in self.files]
        if missing:
            raise ForgeError(f"model '{self.spec.name}' has no {', '.join(missing)}: pull it again")
        ort = await forge_js.loadOrt(self.ep, self.threads)
        self.tokens = WhisperTokens(self.files["vocabulary.txt"], json.loads(self.files["config.json"]))
        graphs = {name: self.files[name] for name in GRAPHS}
        self.sessions = await forge_js.whisper.open(ort, jsobj(graphs), self.threads, self.ep)
        self.files = {}

    async def unload(self) -> None:
        if self.sessions is not None:
            await helpers().whisper.close(self.sessions)
            self.sessions = None

    def is_loaded(self) -> bool:
        return self.sessions is not None

    def metadata(self) -> dict[str, Any]:
        return {"engine": self.engine, "accelerator": self.accelerator, "threads": self.threads}

    async def measure(self, limit_ms: float) -> float | None:
        """Seconds of audio per second on a 30 s window, from one encoder pass and the mean decoder
        step (times ``WINDOW_TOKENS``); None when the measurement ran past ``limit_ms``."""
        if self.tokens is None or self.sessions is None:
            raise ForgeError(f"model '{self.spec.name}' is not loaded")
        whisper = helpers().whisper
        out = await whisper.measure(self.sessions, len(self.tokens.vocab), MEASURE_STEPS, limit_ms)
        if absent(out):
            return None
        window_ms = float(out.encoder_ms) + WINDOW_TOKENS * float(out.step_ms)
        return WINDOW / 100 / max(window_ms / 1000, 1e-6)

    async def transcribe_samples(self, samples: Any, language: str | None, task: str) -> Transcript:
        """``samples``: a JS Float32Array of 16 kHz mono audio."""
        if self.tokens is None or self.sessions is None:
            raise ForgeError(f"model '{self.spec.name}' is not loaded")
        check_transcription(self.spec.name, self.spec.config, TranscriptionInput(b"", language, task))
        whisper, tokens = helpers().whisper, self.tokens
        mel = await whisper.logMel(self.sessions, samples)
        if not tokens.multilingual:
            language = "en"
        elif language is None:  # the likeliest language token after sot, on the first window
            size = len(tokens.vocab)
            found = await whisper.decodeWindow(
                self.sessions,
                mel,
                0,
                jsobj([tokens.sot]),
                jsobj(tokens.not_languages()),
                jsobj([]),
                -1,
                1,
                size,
            )
            language = tokens.language_of(int(found.ids[0]))
        prompt = jsobj(tokens.prompt(language, task))
        suppress, begin = jsobj(tokens.suppress), jsobj(tokens.suppress_begin)
        segments: list[Segment] = []
        seek = 0
        while seek < int(mel.frames):
            out = await whisper.decodeWindow(
                self.sessions, mel, seek, prompt, suppress, begin, tokens.eot, MAX_TOKENS, len(tokens.vocab)
            )
            ids = [int(i) for i in out.ids]
            frames = int(out.frames)
            start, end = seek / 100, (seek + frames) / 100
            segments.append(Segment(len(segments), start, end, tokens.text(ids), tokens=ids, seek=seek))
            seek += frames
        duration = int(samples.length) / SAMPLE_RATE
        return Transcript(join_text(segments), language, duration, segments, task)
