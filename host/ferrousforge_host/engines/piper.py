"""Piper engine for speech: a VITS voice on ONNX Runtime, phonemes from the espeak-ng that piper-tts
bundles (its data inside the package: nothing to install or download). One chunk per sentence, each
sent as soon as it is synthesized."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from ferrousforge.mold import register_mold
from ferrousforge.speech import SpeechChunk, SpeechInput, SpeechMold
from ferrousforge_host.engines.native import ModelLoadError, threads_for

CONFIG_FILE = "voice.onnx.json"


@register_mold
class PiperMold(SpeechMold):
    formats = ("onnx",)
    engine = "piper"
    native = True

    voice: Any = None
    speakers: dict[str, int] = {}  # noqa: RUF012  (replaced per instance at load)

    def load_sync(self) -> None:
        import onnxruntime as ort
        from piper import PiperConfig, PiperVoice

        config_path = self.spec.files.get(CONFIG_FILE)
        if not config_path:
            raise ModelLoadError(f"model '{self.spec.name}' has no {CONFIG_FILE} layer")
        try:
            with open(config_path, encoding="utf-8") as f:
                config = PiperConfig.from_dict(json.load(f))
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads_for(self.options.num_thread)
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(self.spec.path, options, providers=["CPUExecutionProvider"])
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelLoadError(f"cannot load Piper voice '{self.spec.name}': {exc}") from exc
        self.voice = PiperVoice(session=session, config=config)
        # a multi-speaker voice names its speakers; a single one is the model's one voice
        self.speakers = dict(config.speaker_id_map)

    def unload_sync(self) -> None:
        self.voice = None

    def is_loaded(self) -> bool:
        return self.voice is not None

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "accelerator": "cpu"}

    def memory_bytes(self) -> int:
        return os.path.getsize(self.spec.path) * 2 if self.voice is not None else 0

    def synthesize_sync(self, request: SpeechInput) -> Iterator[SpeechChunk]:
        from piper import SynthesisConfig

        if self.voice is None:
            raise ModelLoadError(f"model '{self.spec.name}' is not loaded")
        length_scale = self.voice.config.length_scale / request.speed
        config = SynthesisConfig(speaker_id=self.speakers.get(request.voice), length_scale=length_scale)
        for chunk in self.voice.synthesize(request.text, config):
            yield SpeechChunk(chunk.audio_int16_bytes, chunk.sample_rate)
