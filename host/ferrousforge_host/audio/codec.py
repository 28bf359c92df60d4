"""Audio in and out through PyAV (FFmpeg): any container a browser or a phone records (wav, mp3, ogg,
webm/opus, m4a, flac) decoded to what Whisper takes, and speech encoded chunk by chunk as it comes
(wav, mp3, opus, aac, flac, pcm), so that a client hears the first sentence while the rest is made."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ferrousforge.errors import BadRequest
from ferrousforge.speech import SAMPLE_RATE

if TYPE_CHECKING:
    import av

# response_format → (content type, PyAV container, codec); wav and pcm are written here
FORMATS: dict[str, tuple[str, str, str]] = {
    "wav": ("audio/wav", "", ""),
    "pcm": ("audio/pcm", "", ""),
    "mp3": ("audio/mpeg", "mp3", "libmp3lame"),
    "opus": ("audio/ogg; codecs=opus", "ogg", "libopus"),
    "aac": ("audio/aac", "adts", "aac"),
    "flac": ("audio/flac", "flac", "flac"),
}
PCM_RATE = 24_000  # OpenAI's "pcm": raw 16-bit mono at 24 kHz, which clients assume
OPUS_RATE = 48_000


def decode(data: bytes, max_seconds: float) -> bytes:
    """The first audio stream of any container FFmpeg reads → mono float32 samples at 16 kHz."""
    if not data:
        raise BadRequest("the audio file is empty")
    import av  # (FFmpeg loads with the first audio, not with the server)
    import av.error

    limit = int(max_seconds * SAMPLE_RATE) * 4
    out = bytearray()
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise BadRequest("the file holds no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            for frame in container.decode(container.streams.audio[0]):
                for piece in resampler.resample(frame):
                    out += bytes(piece.planes[0])[: piece.samples * 4]
                if len(out) > limit:
                    raise BadRequest(
                        f"the audio is longer than {max_seconds:g} s (FERROUSFORGE_MAX_AUDIO_SECONDS)"
                    )
            for piece in resampler.resample(None):
                out += bytes(piece.planes[0])[: piece.samples * 4]
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        why = getattr(exc, "strerror", None) or str(exc)  # (FFmpeg's, without its errno and file name)
        raise BadRequest(f"not a readable audio file: {why}") from None
    if not out:
        raise BadRequest("the file holds no audio samples")
    return bytes(out[:limit])


def wav_header(sample_rate: int, data_bytes: int = 0xFFFFFFFF) -> bytes:
    """A 16-bit mono WAV header; the default length marks a stream whose end is not known yet."""
    riff = min(data_bytes + 36, 0xFFFFFFFF)
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class _Sink:
    """A write-only file for PyAV's muxer: what it writes is taken out after each chunk."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        out = bytes(self.buffer)
        self.buffer.clear()
        return out


class Encoder:
    """16-bit mono PCM chunks at ``sample_rate`` in, the response format's bytes out, chunk by chunk."""

    def __init__(self, response_format: str, sample_rate: int) -> None:
        if response_format not in FORMATS:
            raise BadRequest(f"response_format must be one of {', '.join(FORMATS)}, not '{response_format}'")
        self.format = response_format
        self.content_type, container, codec = FORMATS[response_format]
        self.sample_rate = sample_rate
        self.started = False
        self._feed: Callable[[bytes | None], bytes]
        import av

        if response_format == "wav":
            self._feed = self._wav
        elif response_format == "pcm":
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=PCM_RATE)
            self._feed = self._pcm
        else:
            self._sink = _Sink()
            # Ogg pages of at most 100 ms: opus leaves as it is made, not once a second (the default)
            options = {"page_duration": "100000"} if container == "ogg" else {}
            self._out = av.open(self._sink, mode="w", format=container, options=options)
            rate = OPUS_RATE if codec == "libopus" else sample_rate
            self._stream: Any = self._out.add_stream(codec, rate=rate, layout="mono")
            ctx: Any = self._stream.codec_context
            self._resampler = av.AudioResampler(
                format=ctx.codec.audio_formats[0].name,
                layout="mono",
                rate=rate,
                frame_size=ctx.frame_size or None,
            )
            self._feed = self._encode

    def feed(self, pcm: bytes) -> bytes:
        return self._feed(pcm)

    def close(self) -> bytes:
        return self._feed(None)

    def _frame(self, pcm: bytes) -> av.AudioFrame:
        import av

        samples = len(pcm) // 2
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(pcm[: samples * 2])
        frame.sample_rate = self.sample_rate
        return frame

    def _wav(self, pcm: bytes | None) -> bytes:
        head = b"" if self.started else wav_header(self.sample_rate)
        self.started = True
        return head + (pcm or b"")

    def _pcm(self, pcm: bytes | None) -> bytes:
        pieces = self._resampler.resample(self._frame(pcm) if pcm else None)
        return b"".join(bytes(p.planes[0])[: p.samples * 2] for p in pieces)

    def _encode(self, pcm: bytes | None) -> bytes:
        for piece in self._resampler.resample(self._frame(pcm) if pcm else None):
            self._out.mux(self._stream.encode(piece))
        if pcm is None:
            self._out.mux(self._stream.encode(None))
            self._out.close()
        return self._sink.take()
