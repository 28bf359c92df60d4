"""faster-whisper (CTranslate2) engine for transcription: language detection, segment and word
timestamps, and the Silero VAD filter that faster-whisper ships (an ONNX file in its package: no
download). Weights are quantized to int8 when loaded; decoding is greedy, falling back to higher
temperatures as OpenAI's Whisper does when a request's temperature is 0."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from ferrousforge.mold import register_mold
from ferrousforge.speech import AudioFacts, Segment, TranscriptionInput, TranscriptionMold, Word
from ferrousforge_host.engines.native import ModelLoadError, threads_for

# OpenAI's Whisper: at temperature 0, retry a window at these when its decode looks degenerate
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COMPUTE_TYPE = "int8"


def model_folder(spec_path: str, files: dict[str, str]) -> str:
    """A folder in which the model's blobs carry the names faster-whisper looks for (links)."""
    folder = tempfile.mkdtemp(prefix="ferrousforge-whisper-")
    os.symlink(spec_path, os.path.join(folder, "model.bin"))
    for name, path in files.items():
        if name != "model.bin" and "/" not in name:
            os.symlink(path, os.path.join(folder, name))
    return folder


def decode_options(request: TranscriptionInput) -> dict[str, Any]:
    """faster-whisper's arguments for a request (shared with the benchmark's direct calls)."""
    return {
        "language": request.language,
        "task": request.task,
        "initial_prompt": request.prompt or None,
        "temperature": FALLBACK_TEMPERATURES if request.temperature == 0 else request.temperature,
        "word_timestamps": request.word_timestamps,
        "vad_filter": request.vad_filter,
        "beam_size": 1,  # greedy: what a browser engine does too, so that both give the same text
    }


@register_mold
class FasterWhisperMold(TranscriptionMold):
    formats = ("ctranslate2",)
    engine = "faster-whisper"
    native = True

    model: Any = None
    device = "cpu"

    def load_sync(self) -> None:
        import ctranslate2
        from faster_whisper import WhisperModel

        self.device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        folder = model_folder(self.spec.path, self.spec.files)
        try:
            self.model = WhisperModel(
                folder,
                device=self.device,
                compute_type=COMPUTE_TYPE,
                cpu_threads=threads_for(self.options.num_thread),
                num_workers=1,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelLoadError(f"cannot load Whisper model '{self.spec.name}': {exc}") from exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # loaded: the weights are in memory

    def unload_sync(self) -> None:
        self.model = None

    def is_loaded(self) -> bool:
        return self.model is not None

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "accelerator": self.device, "compute_type": COMPUTE_TYPE}

    def memory_bytes(self) -> int:
        return os.path.getsize(self.spec.path) // 2 if self.model is not None else 0  # f16 → int8

    def transcribe_sync(self, request: TranscriptionInput) -> Iterator[AudioFacts | Segment]:
        if self.model is None:
            raise ModelLoadError(f"model '{self.spec.name}' is not loaded")
        audio = np.frombuffer(request.audio, dtype=np.float32)
        segments, info = self.model.transcribe(audio, **decode_options(request))
        yield AudioFacts(
            info.language,
            float(info.language_probability),
            float(info.duration),
            float(info.duration_after_vad),
        )
        for i, s in enumerate(segments):
            words = [Word(float(w.start), float(w.end), w.word, float(w.probability)) for w in s.words or []]
            yield Segment(
                id=i,
                start=float(s.start),
                end=float(s.end),
                text=s.text,
                words=words,
                tokens=list(s.tokens),
                seek=int(s.seek),
                avg_logprob=float(s.avg_logprob),
                no_speech_prob=float(s.no_speech_prob),
                compression_ratio=float(s.compression_ratio),
                temperature=float(s.temperature or 0.0),
            )
