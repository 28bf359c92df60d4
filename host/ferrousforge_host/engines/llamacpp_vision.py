"""Images in prompts for the llama.cpp engine, through llama.cpp's libmtmd.

A vision model is a GGUF and its projector (an mmproj GGUF: Ollama's projector layer). The projector
encodes each image into embeddings that take the image's place in the sequence. A prompt marks where
each image goes with ``IMAGE_MARKER``; ``Projector.tokenize`` splits it into token runs and images,
and the decode thread evaluates each image into a slot's sequence with ``Projector.evaluate``.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
from dataclasses import dataclass
from typing import Any

import llama_cpp as L

from ferrousforge.errors import BadRequest, ForgeError
from ferrousforge.generation import IMAGE_MARKER
from ferrousforge_host.engines import llamacpp_log
from ferrousforge_host.engines.native import ModelLoadError


@dataclass
class ImageSpan:
    """One image of a prompt: its chunk (owned by the prompt's chunk list), the positions it takes,
    and the id its positions carry in the prompt's tokens (``image_id``)."""

    chunk: Any
    n_pos: int
    id: int


def image_id(data: bytes) -> int:
    """The stand-in token of an image's positions: negative (no token has it), the same for the same
    bytes, so a prompt that repeats an earlier one's image shares its cached prefix through it."""
    return -2 - int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


Segment = list[int] | ImageSpan


# What stb_image (libmtmd's decoder) reads, by the first bytes: PNG, JPEG, GIF, BMP, PNM. Anything
# else is refused here: libmtmd would go on to try it as audio and as video (through ffprobe).
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")


@functools.cache
def _mtmd() -> Any:
    """llama-cpp-python's libmtmd bindings, from the folder libllama came from, logging as llama.cpp
    does here (not at all unless verbose)."""
    if "LLAMA_CPP_LIB_PATH" in os.environ:  # an external build (CUDA, the safe build) has its own
        os.environ.setdefault("MTMD_CPP_LIB", os.environ["LLAMA_CPP_LIB_PATH"])
    try:
        from llama_cpp import mtmd_cpp
    except (OSError, RuntimeError, FileNotFoundError) as exc:
        raise ModelLoadError(f"this llama.cpp build has no libmtmd for images: {exc}") from exc
    mtmd_cpp.mtmd_helper_log_set(llamacpp_log.callback, ctypes.c_void_p(0))
    return mtmd_cpp


class Projector:
    """A loaded projector over a loaded llama.cpp model."""

    def __init__(self, path: str, model: Any, threads: int, use_gpu: bool) -> None:
        self.m = M = _mtmd()
        params = M.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = threads
        params.print_timings = False
        params.warmup = False
        self._marker = IMAGE_MARKER.encode()  # kept alive: the context reads it at init
        params.media_marker = self._marker
        llamacpp_log.clear()
        self.ctx = M.mtmd_init_from_file(path.encode(), model, params)
        if not self.ctx:
            lines = [
                line.strip() for error in llamacpp_log.errors for line in error.splitlines() if line.strip()
            ]
            why = "; ".join(lines).replace("mtmd_init_from_file: error: ", "") or "is it an mmproj GGUF?"
            raise ModelLoadError(f"cannot load the vision projector for this model: {why}")
        if not M.mtmd_support_vision(self.ctx):
            self.close()
            raise ModelLoadError("the projector has no vision encoder")

    def close(self) -> None:
        if self.ctx:
            self.m.mtmd_free(self.ctx)
            self.ctx = None

    def tokenize(self, text: str, images: list[bytes], add_special: bool) -> tuple[list[Segment], Any]:
        """The prompt as runs of tokens and images, in order, and the chunk list that owns the images
        (free it with ``free_chunks`` once they are evaluated)."""
        M = self.m
        if (marked := text.count(IMAGE_MARKER)) != len(images):
            raise BadRequest(f"the prompt marks {marked} image(s) but {len(images)} were given")
        bitmaps = []
        try:
            for i, data in enumerate(images, 1):
                if not data.startswith(_IMAGE_MAGIC):
                    raise BadRequest(f"image {i} is not a PNG, JPEG, GIF, BMP or PNM image")
                buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
                bitmap = M.mtmd_helper_bitmap_init_from_buf(self.ctx, buf, len(data), False)
                if not bitmap:
                    raise BadRequest(f"image {i} could not be decoded")
                bitmaps.append(bitmap)
            return self._split(text, bitmaps, [image_id(data) for data in images], add_special)
        finally:
            for bitmap in bitmaps:
                M.mtmd_bitmap_free(bitmap)

    def positions_per_image(self) -> int:
        """The positions an image takes: exact for encoders of one fixed size (LLaVA's), a 336×336
        image's for those that resize or tile (an estimate, to fit a chat to its window)."""
        M, side = self.m, 336
        bitmap = M.mtmd_bitmap_init(side, side, (ctypes.c_uint8 * (side * side * 3))())
        try:
            segments, chunks = self._split(IMAGE_MARKER, [bitmap], [0], add_special=False)
        finally:
            M.mtmd_bitmap_free(bitmap)
        free_chunks(chunks)
        return sum(s.n_pos for s in segments if isinstance(s, ImageSpan))

    def _split(
        self, text: str, bitmaps: list[Any], ids: list[int], add_special: bool
    ) -> tuple[list[Segment], Any]:
        """libmtmd's tokenization of a prompt and its bitmaps, as runs of tokens and ``ImageSpan``s."""
        M = self.m
        chunks = M.mtmd_input_chunks_init()
        try:
            encoded = text.encode()
            given = M.mtmd_input_text()
            given.text, given.text_len = encoded, len(encoded)
            given.add_special, given.parse_special = add_special, True
            array = (M.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            rc = M.mtmd_tokenize(self.ctx, chunks, ctypes.byref(given), array, len(bitmaps))
            if rc != 0:
                raise BadRequest(f"the images could not be prepared for the model (mtmd_tokenize: {rc})")
            segments: list[Segment] = []
            image_ids = iter(ids)  # image chunks come in the images' order
            for i in range(M.mtmd_input_chunks_size(chunks)):
                chunk = M.mtmd_input_chunks_get(chunks, i)
                if M.mtmd_input_chunk_get_type(chunk) == M.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    n = ctypes.c_size_t()
                    tokens = M.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                    run = list(tokens[: n.value])
                    if segments and isinstance(segments[-1], list):
                        segments[-1].extend(run)
                    else:
                        segments.append(run)
                else:
                    segments.append(ImageSpan(chunk, M.mtmd_input_chunk_get_n_pos(chunk), next(image_ids)))
        except BaseException:
            free_chunks(chunks)
            raise
        return segments, chunks

    def evaluate(self, lctx: Any, image: ImageSpan, pos: int, seq: int, n_batch: int) -> None:
        """Encode an image and decode its embeddings into sequence ``seq`` from position ``pos``."""
        after = L.llama_pos(0)
        rc = self.m.mtmd_helper_eval_chunk_single(
            self.ctx, lctx, image.chunk, pos, seq, n_batch, False, ctypes.byref(after)
        )
        if rc != 0:
            raise ForgeError(f"llama.cpp could not encode an image ({rc})")


def free_chunks(chunks: Any) -> None:
    """Free a prompt's chunk list (None: nothing to free)."""
    if chunks:
        _mtmd().mtmd_input_chunks_free(chunks)
