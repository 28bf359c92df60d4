"""Whisper's ONNX graphs, written from the CTranslate2 weights when whisper:tiny.en is pulled, decode a
Piper-spoken sentence on onnxruntime (CPU, greedy) into faster-whisper's transcript, token for token."""

from __future__ import annotations

import asyncio
import io
import json
import wave
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from ferrousforge.browser.whisper_tokens import WhisperTokens
from ferrousforge.catalogue import PIPER_JOE, WHISPER_TINY_EN
from ferrousforge.manifest import FILE
from ferrousforge.names import ModelName
from ferrousforge_host.audio.codec import decode
from ferrousforge_host.models import whisper_onnx
from ferrousforge_host.models.packaged import package_path, packaged_plan
from ferrousforge_host.models.pull import Puller
from ferrousforge_host.store import BlobStore

SENTENCE = "Please send the report to my office before noon."


@pytest.fixture(scope="module")
def pulled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """whisper:tiny.en pulled into a fresh store: its named files, ONNX graphs included."""
    store = BlobStore(tmp_path_factory.mktemp("whisper-store"))
    name = ModelName.parse(WHISPER_TINY_EN.name)

    async def pull() -> None:
        async for _ in Puller(store)._pull(name, packaged_plan(WHISPER_TINY_EN)):
            pass

    asyncio.run(pull())
    manifest = store.get(name).manifest
    assert [x.name for x in manifest.layers if x.media_type == FILE][-3:] == list(whisper_onnx.FILE_NAMES)
    return {x.name: store.blob_path(x.digest) for x in manifest.layers if x.name}


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from piper import PiperVoice
    from piper.config import SynthesisConfig

    voice_path = package_path(PIPER_JOE.files[0].paths[0])
    assert voice_path is not None
    voice = PiperVoice.load(str(voice_path))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:  # without piper's random noise: the same audio every run
        voice.synthesize_wav(SENTENCE, out, SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))
    return np.frombuffer(decode(buffer.getvalue(), 60), dtype=np.float32)  # 16 kHz mono


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def greedy(files: dict[str, Path], audio: np.ndarray) -> tuple[list[int], str]:
    tokens = WhisperTokens(files["vocabulary.txt"].read_text(), json.loads(files["config.json"].read_text()))
    mel = session(files["whisper-mel.onnx"]).run(None, {"audio": audio})[0]
    cross_k, cross_v = session(files["whisper-encoder.onnx"]).run(None, {"mel": mel})
    decoder = session(files["whisper-decoder.onnx"])
    layers, _, heads, dim, _ = cross_k.shape
    suppress = np.zeros(len(tokens.vocab), np.float32)
    suppress[tokens.suppress] = -np.inf
    at_start = suppress.copy()
    at_start[tokens.suppress_begin] = -np.inf
    self_k = self_v = np.zeros((layers, 1, heads, 0, dim), np.float32)
    step, out = tokens.prompt(), list[int]()
    while len(out) < 100:
        feeds = {"tokens": np.array([step], np.int64), "self_k": self_k, "self_v": self_v}
        feeds |= {"cross_k": cross_k, "cross_v": cross_v, "suppress": at_start if not out else suppress}
        token, self_k, self_v = decoder.run(None, feeds)
        if int(token[0]) == tokens.eot:
            break
        out.append(int(token[0]))
        step = [out[-1]]
    return out, tokens.text(out)


def test_the_mel_graph_is_faster_whispers_log_mel(pulled: dict[str, Path], speech: np.ndarray) -> None:
    from faster_whisper.feature_extractor import FeatureExtractor

    extractor = FeatureExtractor()
    assert np.abs(whisper_onnx.mel_filters(80) - extractor.mel_filters).max() < 1e-6
    mel = session(pulled["whisper-mel.onnx"]).run(None, {"audio": speech})[0]
    expected = extractor(speech)[:, :-1]  # the frames faster-whisper decodes
    assert mel.shape == (1, len(speech) // 160, 80) == (1, *expected.T.shape)
    assert np.abs(mel[0].T - expected).max() < 1e-4


def test_greedy_onnx_decoding_gives_faster_whispers_transcript(
    pulled: dict[str, Path], speech: np.ndarray, tmp_path: Path
) -> None:
    from faster_whisper import WhisperModel

    ids, text = greedy(pulled, speech)
    folder = tmp_path / "whisper"  # the names faster-whisper looks for
    folder.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):
        (folder / name).symlink_to(pulled[name])
    reference = WhisperModel(str(folder), compute_type="int8", cpu_threads=1, local_files_only=True)
    segments, _ = reference.transcribe(
        speech, beam_size=1, temperature=0.0, vad_filter=False, without_timestamps=True, language="en"
    )
    segments = list(segments)
    assert [t for s in segments for t in s.tokens] == ids
    assert text == "".join(s.text for s in segments)
    assert text.strip() == SENTENCE


def test_a_window_shorter_than_30_s_is_padded_inside_the_encoder(pulled: dict[str, Path]) -> None:
    encoder = session(pulled["whisper-encoder.onnx"])
    mel = np.full((1, 3000, 80), -0.5, np.float32)
    mel[0, 1000:] = 0.0  # what the graph pads with
    full = encoder.run(None, {"mel": mel})[0]
    short = encoder.run(None, {"mel": mel[:, :1000]})[0]
    assert np.allclose(full, short, atol=1e-4)


def test_a_model_bin_that_is_not_whisper_is_refused(tmp_path: Path) -> None:
    import struct

    name = b"TransformerSpec"
    data = struct.pack("<IH", 6, len(name) + 1) + name + b"\0" + struct.pack("<III", 1, 0, 0)
    (tmp_path / "model.bin").write_bytes(data)
    with pytest.raises(whisper_onnx.UnsupportedModel, match="not Whisper"):
        whisper_onnx.read_ct2(tmp_path / "model.bin")
