"""Speech through the host against the same libraries called in-process: transcription real-time factor
(Whisper tiny.en and base, faster-whisper) and synthesis speed and time to first audio (Piper).

    .venv/bin/python bench/speech.py --runs 5

One thread everywhere (FERROUSFORGE_NUM_THREAD=1; cpu_threads=1 and one ONNX Runtime thread in
process). The host is ``ferrousforge serve`` on a temporary store holding the catalogue's models;
"direct" is faster-whisper / piper-tts called in this process on the same files with the same decode
options (greedy, VAD filter, fallback temperatures). Requests alternate host and direct; medians.
Transcription takes a ~30 s passage Piper speaks once through the host (a WAV upload: the host's
figure includes the upload and decoding, the direct one faster-whisper's own decoding of the same bytes).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from generate_speed import start_forge

ROOT = Path(__file__).resolve().parent.parent
PASSAGE = (
    "The history of computing is longer than the history of computing hardware. Digital computing is "
    "tied to the representation of numbers. The earliest known tool for use in computation is the abacus. "
    "It was thought to have been invented in Babylon a long time ago. Its original style of usage was by "
    "lines drawn in sand with pebbles. Abaci of a more modern design are still used as calculation tools "
    "today. Mechanical calculators came much later, and electronic computers later still. Today a phone "
    "in a pocket does more arithmetic in a second than all of those machines did in their lifetimes."
)


def start_host(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``ferrousforge serve`` on a fresh store, one thread, nothing from a registry or Ollama's store."""
    one_thread = {
        "FERROUSFORGE_NUM_THREAD": "1",
        "FERROUSFORGE_REGISTRY": "",
        "FERROUSFORGE_OLLAMA_MODELS": "",
    }
    return start_forge(store, pull=None, extra_env=one_thread)


def model_folder(name: str, store: Path) -> str:
    """The model's files under their own names, from the host's store (the same bytes it loads)."""
    from ferrousforge.names import ModelName
    from ferrousforge_host.engines.whisper import model_folder as link
    from ferrousforge_host.store import BlobStore

    blobs = BlobStore(store)
    manifest = blobs.get(ModelName.parse(name)).manifest
    files = {x.name: str(blobs.blob_path(x.digest)) for x in manifest.layers if x.name}
    return link(files.pop("model.bin"), files)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def bench_transcription(
    client: httpx.Client, store: Path, wav: bytes, seconds: float, runs: int
) -> list[dict]:
    from faster_whisper import WhisperModel

    from ferrousforge.speech import TranscriptionInput
    from ferrousforge_host.engines.whisper import COMPUTE_TYPE, decode_options

    rows = []
    options = decode_options(TranscriptionInput(b""))
    for name in ("whisper:tiny.en", "whisper:base"):
        direct = WhisperModel(
            model_folder(name, store), device="cpu", compute_type=COMPUTE_TYPE, cpu_threads=1
        )
        lang = {"language": "en"} if name == "whisper:base" else {}
        client.post("/v1/audio/transcriptions", data={"model": name, **lang}, files={"file": ("a.wav", wav)})
        list(direct.transcribe(io.BytesIO(wav), **{**options, **lang})[0])  # warm both
        host_t, direct_t = [], []
        texts = {}
        for _ in range(runs):
            t = time.perf_counter()
            r = client.post(
                "/v1/audio/transcriptions", data={"model": name, **lang}, files={"file": ("a.wav", wav)}
            )
            host_t.append(time.perf_counter() - t)
            texts["host"] = r.json()["text"]
            t = time.perf_counter()
            segments, _ = direct.transcribe(io.BytesIO(wav), **{**options, **lang})
            texts["direct"] = "".join(s.text for s in segments).strip()
            direct_t.append(time.perf_counter() - t)
        rows.append(
            {
                "model": name,
                "audio_s": seconds,
                "host_rtf": median(host_t) / seconds,
                "direct_rtf": median(direct_t) / seconds,
                "ratio": median(direct_t) / median(host_t),
                "same_text": texts["host"] == texts["direct"],
            }
        )
    return rows


def bench_speech(client: httpx.Client, store: Path, runs: int) -> dict:
    import onnxruntime as ort
    from piper import PiperConfig, PiperVoice

    from ferrousforge.names import ModelName
    from ferrousforge_host.store import BlobStore

    blobs = BlobStore(store)
    manifest = blobs.get(ModelName.parse("piper:joe")).manifest
    files = {x.name: str(blobs.blob_path(x.digest)) for x in manifest.layers}
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    voice = PiperVoice(
        session=ort.InferenceSession(files["voice.onnx"], options, providers=["CPUExecutionProvider"]),
        config=PiperConfig.from_dict(json.loads(Path(files["voice.onnx.json"]).read_text())),
    )
    body = {"model": "piper:joe", "input": PASSAGE, "response_format": "pcm"}
    client.post("/v1/audio/speech", json=body).read()
    host_total, host_first, direct_total, direct_first, audio = [], [], [], [], 0.0
    for _ in range(runs):
        t = time.perf_counter()
        size, first = 0, 0.0
        with client.stream("POST", "/v1/audio/speech", json=body) as r:
            for block in r.iter_raw():
                first = first or time.perf_counter() - t
                size += len(block)
        host_total.append(time.perf_counter() - t)
        host_first.append(first)
        audio = size / 2 / 24000
        t = time.perf_counter()
        first = 0.0
        for _chunk in voice.synthesize(PASSAGE):
            first = first or time.perf_counter() - t
        direct_total.append(time.perf_counter() - t)
        direct_first.append(first)
    return {
        "audio_s": audio,
        "host_speed": audio / median(host_total),
        "direct_speed": audio / median(direct_total),
        "host_first_ms": 1000 * median(host_first),
        "direct_first_ms": 1000 * median(direct_first),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    kept = tempfile.TemporaryDirectory(prefix="ff-bench-speech-")  # removed when main returns
    store = Path(kept.name)
    proc, url = start_host(store)
    try:
        with httpx.Client(base_url=url, timeout=600) as client:
            for name in ("whisper:tiny.en", "whisper:base", "piper:joe"):
                r = client.post("/api/pull", json={"model": name, "stream": False})
                r.raise_for_status()
            wav = client.post(
                "/v1/audio/speech", json={"model": "piper:joe", "input": PASSAGE, "response_format": "wav"}
            ).content
            seconds = (len(wav) - 44) / 2 / 22050
            rows = bench_transcription(client, store, wav, seconds, args.runs)
            speech = bench_speech(client, store, args.runs)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"transcription of {seconds:.1f} s of speech, {args.runs} alternating runs, medians")
    print("| model | host RTF | direct RTF | host speed vs direct | same text |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['host_rtf']:.3f} | {row['direct_rtf']:.3f} | {row['ratio']:.2f}× "
            f"| {'yes' if row['same_text'] else 'no'} |"
        )
    s = speech
    print(f"\nsynthesis of {s['audio_s']:.1f} s of speech (pcm stream), medians")
    print("| target | audio s per s | first audio |")
    print("|---|---|---|")
    print(f"| host `/v1/audio/speech` | {s['host_speed']:.1f} | {s['host_first_ms']:.0f} ms |")
    print(f"| piper-tts in-process | {s['direct_speed']:.1f} | {s['direct_first_ms']:.0f} ms |")
    speed, first = s["host_speed"] / s["direct_speed"], s["host_first_ms"] / s["direct_first_ms"]
    print(f"| ratio | {speed:.2f}× | {first:.2f}× |")


if __name__ == "__main__":
    main()
