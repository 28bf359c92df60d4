"""The wgpu engine for GGUF text generation: the GPU compute layer's decoder (``ferrousforge.gpu.decoder``)
with llama.cpp's tokenizer (its vocabulary only, no weights) and Ollama's sampling options.

The generation loop is the page's too (``ferrousforge.gpu.generate``): ``num_parallel`` slots whose KV
caches are kept between requests, every sequence's decode step in one pass, all on the engine's own
event loop thread (a request's thread reads its chunks from a queue). Here sampling applies the options
to the logits with numpy as llama.cpp's sampler chain does (penalties, top-k, typical, top-p, min-p,
temperature, a seeded draw).
``format`` and tools need llama.cpp's grammar sampler: they are refused here with a pointer to it.
"""

from __future__ import annotations

import asyncio
import mmap
import queue
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import llama_cpp as L
import numpy as np

from ferrousforge.errors import BadRequest
from ferrousforge.generation import GenerationChunk, GenerationInput, TextGenerationMold
from ferrousforge.gguf import GGUFError, parse_tensors
from ferrousforge.gpu.decoder import Decoder, cannot_run
from ferrousforge.gpu.generate import Slots
from ferrousforge.mold import ModelSpec, register_mold
from ferrousforge.options import Options
from ferrousforge.sampling import penalizes, penalty_window, typical_keep
from ferrousforge_host.engines.llamacpp import Vocab, apply_penalties
from ferrousforge_host.engines.native import ModelLoadError
from ferrousforge_host.engines.wgpu import device, gpu_facts, wgpu_is_faster


def sample(
    logits: np.ndarray,
    opts: Options,
    history: list[int],
    rng: np.random.Generator,
    ids: list[int] | None = None,
) -> int:
    """One token from a row of logits (``ids``: the candidates' tokens, best first; else the whole
    vocabulary), as llama.cpp's default chain orders the steps."""
    x = logits.astype(np.float64)
    if penalizes(opts):  # the history is the window's tokens (what a context shift left)
        window = penalty_window(history, opts, len(history))
        if ids is not None:  # as positions among the candidates (others only fall further)
            at = {t: i for i, t in enumerate(ids)}
            window = [at[t] for t in window if t in at]
        apply_penalties(x, window, opts)
    token = (lambda i: i) if ids is None else ids.__getitem__
    if opts.temperature <= 0:
        return token(int(x.argmax()))
    order = np.argsort(-x, kind="stable")
    if opts.top_k > 0:
        order = order[: opts.top_k]
    kept = x[order]
    if opts.typical_p < 1.0:
        p = np.exp(kept - kept[0])
        keep = typical_keep((p / p.sum()).tolist(), opts.typical_p)
        order, kept = order[keep], kept[keep]
    p = np.exp(kept - kept[0])
    p /= p.sum()
    if opts.top_p < 1.0:
        cut = int(np.searchsorted(np.cumsum(p), opts.top_p)) + 1
        order, kept, p = order[:cut], kept[:cut], p[:cut]
    if opts.min_p > 0.0:
        keep = p >= opts.min_p * p[0]
        order, kept = order[keep], kept[keep]
    p = np.exp((kept - kept[0]) / opts.temperature)
    return token(int(order[rng.choice(len(order), p=p / p.sum())]))


def decoder_weights(decoder: Decoder) -> str:
    """How the decoder keeps its matrices: "q4", "q8", "f16" or "f32" (the most common form)."""
    forms = list(decoder.forms.values())
    return max(set(forms), key=forms.count) if forms else "f32"


@register_mold
class WgpuGenerateMold(TextGenerationMold):
    formats = ("gguf",)
    engine = "wgpu"
    native = True
    auto: ClassVar[bool] = False
    lacks: ClassVar[frozenset[str]] = frozenset({"format", "logprobs", "logit_bias", "images"})

    @classmethod
    def preferred(cls) -> bool:
        return wgpu_is_faster()

    @classmethod
    def refuses(cls, spec: ModelSpec) -> str:
        if spec.adapters:
            return "LoRA adapters need the llama.cpp engine (options.engine: llama.cpp)"
        reason = cannot_run(spec.config.get("model_info") or {})
        return f"the wgpu engine {reason} (options.engine: llama.cpp)" if reason else ""

    _slots: Slots | None = None
    _loop: asyncio.AbstractEventLoop | None = None  # the slots' passes and every sequence run on it

    def load_sync(self) -> None:
        path = self.spec.path
        params = L.llama_model_default_params()
        params.vocab_only = True
        self._vocab_model = L.llama_model_load_from_file(path.encode(), params)
        if not self._vocab_model:
            raise ModelLoadError(f"cannot load '{self.spec.name}': llama.cpp rejected its vocabulary")
        self.vocab = Vocab(L.llama_model_get_vocab(self._vocab_model))
        error: Exception | None = None
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            data = memoryview(mapped)
            try:  # the weights are copied to the GPU: the file is not kept open
                meta, tensors = parse_tensors(data, len(data))
                arch = meta.get("general.architecture")
                trained = int(meta.get(f"{arch}.context_length") or self.options.num_ctx)
                self.n_ctx = min(self.options.num_ctx, trained)
                decoder = Decoder(device(), data, meta, tensors, self.n_ctx, self.options.num_parallel)
                self._slots = Slots(decoder)
            except (GGUFError, ValueError, KeyError) as exc:
                error = exc
            finally:
                data.release()
        if error is not None:
            self.unload_sync()
            raise ModelLoadError(f"wgpu engine cannot run '{self.spec.name}': {error}") from error
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name=f"wgpu-{self.spec.name}", daemon=True).start()

    def unload_sync(self) -> None:
        self._slots = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None
        if getattr(self, "_vocab_model", None):
            L.llama_model_free(self._vocab_model)
            self._vocab_model = None

    def is_loaded(self) -> bool:
        return self._slots is not None

    def memory_bytes(self) -> int:
        """The weights (f16 or 8 bits) and the KV cache, on the adapter."""
        return self._slots.decoder.memory_bytes if self._slots else 0

    def metadata(self) -> dict[str, Any]:
        base = {**super().metadata(), "n_ctx": self.n_ctx if self.is_loaded() else None}
        if self._slots is None:
            return base
        decoder = self._slots.decoder
        vram = 0 if decoder.device.software else decoder.memory_bytes  # a CPU adapter's memory is RAM
        return {**base, **gpu_facts(decoder.device), "size_vram": vram, "weights": decoder_weights(decoder)}

    def count_tokens(self, text: str) -> int:
        return len(self.vocab.tokenize(text))

    def stream_sync(self, request: GenerationInput) -> Iterator[GenerationChunk]:
        if request.format or request.optional_call:
            raise BadRequest(
                "format and tools need the llama.cpp engine's grammar (options.engine: llama.cpp)"
            )
        if request.logprobs:
            raise BadRequest("logprobs need the llama.cpp engine (options.engine: llama.cpp)")
        if request.logit_bias:
            raise BadRequest("logit_bias needs the llama.cpp engine (options.engine: llama.cpp)")
        if request.images:
            raise BadRequest("images need the llama.cpp engine (options.engine: llama.cpp)")
        slots, loop = self._slots, self._loop
        assert slots is not None and loop is not None
        opts = request.options
        rng = np.random.default_rng(None if opts.seed < 0 else opts.seed)

        def pick(values: list[float], ids: list[int] | None, history: list[int]) -> int:
            return sample(np.asarray(values, dtype=np.float32), opts, history, rng, ids)

        prompt = self.vocab.prompt(request, self.n_ctx)
        chunks: queue.Queue[GenerationChunk | BaseException | None] = queue.Queue()

        async def produce() -> None:  # on the engine's loop, beside every other sequence
            try:
                async for chunk in slots.generate(prompt, opts, self.vocab, pick, request.shift):
                    chunks.put(chunk)
            except asyncio.CancelledError:
                return  # the reader went away
            except BaseException as exc:
                chunks.put(exc)
            else:
                chunks.put(None)

        running = asyncio.run_coroutine_threadsafe(produce(), loop)
        try:
            while (item := chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            running.cancel()  # a client that went away ends its sequence at its next step
