"""The wgpu engine for GGUF text generation: the GPU compute layer's decoder (``ferrousforge.gpu.decoder``)
with llama.cpp's tokenizer (its vocabulary only, no weights) and Ollama's sampling options.

One sequence at a time (requests to the model queue on its worker); its KV cache is kept between
requests, so a request that shares a prefix with the last one (the turns of a chat) runs only the rest.
Greedy decoding reads back one token id a step; sampling reads the logits and applies the options as
llama.cpp's sampler chain does (penalties, top-k, typical, top-p, min-p, temperature, a seeded draw).
``format`` and tools need llama.cpp's grammar sampler: they are refused here with a pointer to it.
"""

from __future__ import annotations

import asyncio
import codecs
import mmap
import os
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import llama_cpp as L
import numpy as np

from ferrousforge.errors import BadRequest
from ferrousforge.generation import GenerationChunk, GenerationInput, GenerationStats, TextGenerationMold
from ferrousforge.gguf import GGUFError, parse_tensors
from ferrousforge.gpu.decoder import Decoder
from ferrousforge.mold import register_mold
from ferrousforge.options import Options
from ferrousforge_host.engines.llamacpp import (
    ModelLoadError,
    StopMatcher,
    Vocab,
    _common_prefix,
    _penalizes,
    apply_penalties,
    penalty_window,
)
from ferrousforge_host.engines.wgpu import device, gpu_facts, wgpu_is_faster


def sample(logits: np.ndarray, opts: Options, history: list[int], rng: np.random.Generator) -> int:
    """One token from a row of logits, as llama.cpp's default chain orders the steps."""
    x = logits.astype(np.float64)
    if _penalizes(opts):  # the history never outgrows this engine's window (no context shift)
        apply_penalties(x, penalty_window(history, opts, len(history)), opts)
    if opts.temperature <= 0:
        return int(x.argmax())
    order = np.argsort(-x, kind="stable")
    if opts.top_k > 0:
        order = order[: opts.top_k]
    kept = x[order]
    p = np.exp(kept - kept[0])
    p /= p.sum()
    if opts.top_p < 1.0:
        cut = int(np.searchsorted(np.cumsum(p), opts.top_p)) + 1
        order, kept, p = order[:cut], kept[:cut], p[:cut]
    if opts.min_p > 0.0:
        keep = p >= opts.min_p * p[0]
        order, kept = order[keep], kept[keep]
    p = np.exp((kept - kept[0]) / opts.temperature)
    return int(order[rng.choice(len(order), p=p / p.sum())])


@register_mold
class WgpuGenerateMold(TextGenerationMold):
    formats = ("gguf",)
    engine = "wgpu"
    native = True
    auto: ClassVar[bool] = False

    @classmethod
    def preferred(cls) -> bool:
        return wgpu_is_faster()

    _decoder: Decoder | None = None

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
                self._decoder = Decoder(device(), data, meta, tensors, self.n_ctx)
            except (GGUFError, ValueError, KeyError) as exc:
                error = exc
            finally:
                data.release()
        if error is not None:
            self.unload_sync()
            raise ModelLoadError(f"wgpu engine cannot run '{self.spec.name}': {error}") from error
        self._cached: list[int] = []  # tokens whose keys and values the decoder holds

    def unload_sync(self) -> None:
        self._decoder = None
        if getattr(self, "_vocab_model", None):
            L.llama_model_free(self._vocab_model)
            self._vocab_model = None

    def is_loaded(self) -> bool:
        return self._decoder is not None

    def memory_bytes(self) -> int:
        return os.path.getsize(self.spec.path) if self.is_loaded() else 0

    def metadata(self) -> dict[str, Any]:
        base = {**super().metadata(), "n_ctx": self.n_ctx if self.is_loaded() else None}
        return {**base, **gpu_facts(self._decoder.device)} if self._decoder else base

    def count_tokens(self, text: str) -> int:
        return len(self.vocab.tokenize(text))

    def _run(self, tokens: list[int], start: int, greedy: bool) -> tuple[int | None, np.ndarray | None]:
        """Feed tokens at ``start``; the next token (greedy) or the last row's logits."""
        assert self._decoder is not None
        self._cached = self._cached[:start] + tokens
        if greedy:
            return asyncio.run(self._decoder.greedy(tokens, start))[-1], None
        rows = asyncio.run(self._decoder.logits(tokens, start))
        return None, np.asarray(rows[-1], dtype=np.float32)

    def stream_sync(self, request: GenerationInput) -> Iterator[GenerationChunk]:
        if request.format or request.optional_call:
            raise BadRequest(
                "format and tools need the llama.cpp engine's grammar (options.engine: llama.cpp)"
            )
        if request.logprobs:
            raise BadRequest("logprobs need the llama.cpp engine (options.engine: llama.cpp)")
        started = time.perf_counter_ns()
        opts = request.options
        prompt = self.vocab.prompt(request, self.n_ctx)
        keep = min(_common_prefix(self._cached, prompt), len(prompt) - 1)  # rerun at least the last token
        greedy = opts.temperature <= 0 and not _penalizes(opts)
        rng = np.random.default_rng(None if opts.seed < 0 else opts.seed)
        limit = (
            self.n_ctx - len(prompt)
            if opts.num_predict < 0
            else min(opts.num_predict, self.n_ctx - len(prompt))
        )
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(opts.stop)
        generated: list[int] = []
        token, logits = self._run(prompt[keep:], keep, greedy)
        prompt_done = time.perf_counter_ns()
        reason, flush = "length", True
        while len(generated) < limit:
            if token is None:
                assert logits is not None
                token = sample(logits, opts, prompt + generated, rng)
            if self.vocab.is_eog(token):
                reason = "stop"
                break
            generated.append(token)
            text, hit = stops.feed(decoder.decode(self.vocab.piece(token)))
            if text:
                yield GenerationChunk(text)
            if hit:
                reason, flush = "stop", False
                break
            if len(generated) >= limit:
                break
            token, logits = self._run([token], len(prompt) + len(generated) - 1, greedy)
        tail = stops.feed(decoder.decode(b"", final=True))[0] + stops.flush() if flush else ""
        finished = time.perf_counter_ns()
        stats = GenerationStats(
            prompt_eval_count=len(prompt),
            prompt_eval_duration=prompt_done - started,
            eval_count=len(generated),
            eval_duration=finished - prompt_done,
            total_duration=finished - started,
        )
        yield GenerationChunk(tail, done=True, done_reason=reason, stats=stats, context=prompt + generated)
