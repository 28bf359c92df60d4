"""Piper in the page: espeak-ng compiled to JavaScript (the ``phonemizer`` npm package, served from
the runtime bundle) gives each clause's phonemes, Python turns them into the voice's phoneme ids as
piper-tts does (``piper_phonemes``), and the voice's VITS graph runs on onnxruntime-web (wasm), one
sentence at a time. The samples stay in JS (``web/piper.mjs``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

from ferrousforge.browser.bridge import helpers, jsobj
from ferrousforge.browser.piper_phonemes import phoneme_ids, sentences, vowel_clusters
from ferrousforge.errors import ForgeError, NotSupported
from ferrousforge.mold import ModelSpec
from ferrousforge.options import Options
from ferrousforge.speech import SpeechChunk, SpeechInput, SpeechMold, resolve_voice

CONFIG_FILE = "voice.onnx.json"
ESPEAK_LANGUAGES = ("en",)  # the espeak-ng data the phonemizer package carries


class WebPiperMold(SpeechMold):
    engine = "onnxruntime-web"
    formats = ("onnx",)
    web_files: ClassVar[tuple[str, ...]] = ("model", CONFIG_FILE)

    def __init__(self, spec: ModelSpec, options: Options, accelerator: str, files: dict[str, Any]) -> None:
        super().__init__(spec, options)
        self.accelerator = accelerator
        self.files = files
        self.threads = options.num_thread or 1
        self.session: Any = None
        self.config: dict[str, Any] = {}

    def load_sync(self) -> None:
        raise NotSupported("browser Molds load asynchronously")

    def unload_sync(self) -> None:
        raise NotSupported("browser Molds unload asynchronously")

    def synthesize_sync(self, request: SpeechInput) -> Iterator[SpeechChunk]:
        raise NotSupported("use synthesize_samples()")

    async def load(self) -> None:
        if CONFIG_FILE not in self.files:
            raise ForgeError(f"model '{self.spec.name}' has no {CONFIG_FILE}: pull it again")
        self.config = json.loads(self.files[CONFIG_FILE])
        if self.config.get("phoneme_type", "espeak") != "espeak":
            raise ForgeError(f"the page phonemizes with espeak-ng only, not {self.config['phoneme_type']}")
        if self.espeak_voice.split("-")[0] not in ESPEAK_LANGUAGES:
            raise ForgeError(f"the page's espeak-ng has no data for '{self.espeak_voice}'")
        forge_js = helpers()
        ort = await forge_js.loadOrt("wasm", self.threads)
        self.session = await forge_js.piper.open(ort, self.files["model"], self.threads)
        self.files = {}

    async def unload(self) -> None:
        if self.session is not None:
            await helpers().piper.close(self.session)
            self.session = None

    def is_loaded(self) -> bool:
        return self.session is not None

    def metadata(self) -> dict[str, Any]:
        return {"engine": self.engine, "accelerator": self.accelerator, "threads": self.threads}

    @property
    def espeak_voice(self) -> str:
        return str(self.config.get("espeak", {}).get("voice") or "en-us")

    @property
    def sample_rate(self) -> int:
        return int(self.config.get("audio", {}).get("sample_rate") or 22050)

    def voices(self) -> list[str]:
        """A multi-speaker voice's speakers; a single one is the voice itself (its dataset's name)."""
        speakers = list(self.config.get("speaker_id_map") or {})
        return speakers or list(self.spec.config.get("voices") or [self.config.get("dataset") or "default"])

    async def synthesize_samples(self, request: SpeechInput, on_chunk: Any = None) -> dict[str, Any]:
        """The text's audio as one JS Float32Array at the voice's rate; each sentence's samples go to
        ``on_chunk(samples, sample_rate)`` as soon as they are made."""
        if self.session is None:
            raise ForgeError(f"model '{self.spec.name}' is not loaded")
        voice = resolve_voice(request.voice, self.voices(), self.spec.name)
        inference = self.config.get("inference", {})
        scales = [
            float(inference.get("noise_scale", 0.667)),
            float(inference.get("length_scale", 1.0)) / request.speed,
            float(inference.get("noise_w", 0.8)),
        ]
        speakers = self.config.get("speaker_id_map") or {}
        speaker = int(speakers.get(voice, 0)) if int(self.config.get("num_speakers", 1)) > 1 else None
        piper = helpers().piper
        clauses = (await piper.clauses(helpers().runtimeURL, request.text, self.espeak_voice)).to_py()
        id_map = self.config["phoneme_id_map"]
        parts = []
        for phonemes in sentences([tuple(c) for c in clauses], vowel_clusters(self.config)):
            samples = await piper.synthesize(
                self.session, jsobj(phoneme_ids(phonemes, id_map)), jsobj(scales), speaker
            )
            if on_chunk is not None:
                on_chunk(samples, self.sample_rate)
            parts.append(samples)
        audio = piper.join(jsobj(parts))
        return {"audio": audio, "sample_rate": self.sample_rate, "voice": voice, "sentences": len(parts)}
