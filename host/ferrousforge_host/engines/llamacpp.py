"""llama.cpp engine for GGUF text generation, on llama-cpp-python's low-level bindings.

It drives llama.cpp directly (batch decode, llama.cpp's own sampler chain reading logits in place)
rather than the high-level ``Llama`` class, so no logits are copied to Python per token and the
prompt computes logits only for its last token. The KV cache of the previous request is reused for
a shared token prefix (the turns of one chat).
"""

from __future__ import annotations

import codecs
import ctypes
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import llama_cpp as L
import numpy as np
from llama_cpp import _logger

from ferrousforge.errors import BadRequest, ForgeError
from ferrousforge.generation import GenerationChunk, GenerationInput, GenerationStats, TextGenerationMold
from ferrousforge.gguf import GGUFError, read_file_metadata
from ferrousforge.mold import register_mold
from ferrousforge.options import Options

_logger.set_verbose(False)
L.llama_backend_init()


def grammar_for(fmt: str | dict[str, Any] | None, optional_call: dict[str, Any] | None = None) -> str | None:
    """GBNF for ``format`` ("json" for any JSON value, or a JSON schema), or for a reply that is
    either a tool call matching ``optional_call`` or free text not starting with "{"."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if fmt == "json":
        return JSON_GBNF
    schema = fmt or optional_call
    if not schema:
        return None
    try:
        grammar: str = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:
        raise BadRequest(f"cannot use this JSON schema: {exc}") from exc
    if fmt:
        return grammar
    return grammar.replace("root ::=", "call ::=", 1) + "\nroot ::= call | free\nfree ::= [^{] [^\\x00]*\n"


def _penalizes(opts: Options) -> bool:
    on = opts.repeat_penalty != 1.0 or opts.presence_penalty != 0 or opts.frequency_penalty != 0
    return bool(on and opts.repeat_last_n != 0)


class ModelLoadError(ForgeError):
    status = 500


def default_threads() -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if cores <= 4 else cores // 2  # physical cores on typical SMT machines


class StopMatcher:
    """Finds stop strings in streamed text, holding back what could be the start of one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was hit)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [i for s in self.stops if (i := self.pending.find(s)) >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(stop[:n]):
                    hold = n
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


@register_mold
class LlamaCppMold(TextGenerationMold):
    formats = ("gguf",)
    engine = "llama.cpp"

    _model: Any = None
    _ctx: Any = None

    def load_sync(self) -> None:
        path = self.spec.path
        try:
            meta = read_file_metadata(path)
        except (GGUFError, OSError) as exc:
            raise ModelLoadError(f"cannot load '{self.spec.name}': {exc}") from exc
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = 999 if L.llama_supports_gpu_offload() else 0
        model = L.llama_model_load_from_file(path.encode(), mparams)
        if not model:
            raise ModelLoadError(
                f"cannot load '{self.spec.name}': llama.cpp rejected {os.path.basename(path)}"
            )
        n_ctx_train = L.llama_model_n_ctx_train(model)
        opts = self.options
        threads = opts.num_thread or default_threads()
        cparams = L.llama_context_default_params()
        cparams.n_ctx = min(opts.num_ctx, n_ctx_train) if n_ctx_train > 0 else opts.num_ctx
        cparams.n_batch = cparams.n_ubatch = min(opts.num_batch, cparams.n_ctx)
        cparams.n_seq_max = 1
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_AUTO
        cparams.no_perf = True
        ctx = L.llama_init_from_model(model, cparams)
        if not ctx:
            L.llama_model_free(model)
            raise ModelLoadError(f"cannot create a context for '{self.spec.name}' (num_ctx={cparams.n_ctx})")
        self._model, self._ctx = model, ctx
        self._vocab = L.llama_model_get_vocab(model)
        self._n_vocab = L.llama_vocab_n_tokens(self._vocab)
        self._n_ctx = L.llama_n_ctx(ctx)
        self._n_batch = cparams.n_batch
        self._cached: list[int] = []
        self._pieces: dict[int, bytes] = {}
        self._memory = L.llama_get_memory(ctx)
        self._kv_bytes = self._estimate_kv(meta, self._n_ctx)
        self._file_bytes = os.path.getsize(path)

    def unload_sync(self) -> None:
        if self._ctx:
            L.llama_free(self._ctx)
        if self._model:
            L.llama_model_free(self._model)
        self._ctx = self._model = None

    def is_loaded(self) -> bool:
        return self._ctx is not None

    def memory_bytes(self) -> int:
        return self._file_bytes + self._kv_bytes if self.is_loaded() else 0

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "n_ctx": self._n_ctx if self.is_loaded() else None}

    @staticmethod
    def _estimate_kv(meta: dict[str, Any], n_ctx: int) -> int:
        arch = meta.get("general.architecture", "")
        layers = int(meta.get(f"{arch}.block_count", 0) or 0)
        heads = int(meta.get(f"{arch}.attention.head_count", 1) or 1)
        kv_heads = meta.get(f"{arch}.attention.head_count_kv", heads)
        kv_heads = int(kv_heads if isinstance(kv_heads, int) else heads)
        embd = int(meta.get(f"{arch}.embedding_length", 0) or 0)
        head_dim = int(meta.get(f"{arch}.attention.key_length", embd // max(heads, 1)) or 0)
        return 2 * layers * n_ctx * kv_heads * head_dim * 2  # K and V, f16

    # -- tokens ---------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        data = text.encode()
        size = len(data) + 8
        buf = (L.llama_token * size)()
        n = L.llama_tokenize(self._vocab, data, len(data), buf, size, add_special, True)
        if n < 0:
            size = -n
            buf = (L.llama_token * size)()
            n = L.llama_tokenize(self._vocab, data, len(data), buf, size, add_special, True)
        return list(buf[:n])

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = L.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = L.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            piece = self._pieces[token] = buf.raw[:n]
        return piece

    def _decode(self, tokens: list[int]) -> None:
        """Evaluate tokens after the cached ones; logits only for the last token of each batch."""
        for start in range(0, len(tokens), self._n_batch):
            part = tokens[start : start + self._n_batch]
            arr = (L.llama_token * len(part))(*part)
            rc = L.llama_decode(self._ctx, L.llama_batch_get_one(arr, len(part)))
            if rc != 0:
                self._reset()
                raise ForgeError(f"llama_decode failed ({rc})")
            self._cached.extend(part)

    def _reset(self) -> None:
        L.llama_memory_clear(self._memory, True)
        self._cached = []

    def _reuse_prefix(self, tokens: list[int]) -> int:
        n = 0
        limit = min(len(self._cached), len(tokens) - 1)  # evaluate at least one token for fresh logits
        while n < limit and self._cached[n] == tokens[n]:
            n += 1
        if n < len(self._cached):
            if n == 0 or not L.llama_memory_seq_rm(self._memory, 0, n, -1):
                self._reset()
                return 0
            del self._cached[n:]
        return n

    def _sampler(self, opts: Options, grammar: str | None, history: list[int]) -> Any:
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            if not sampler:
                L.llama_sampler_free(chain)
                raise BadRequest("invalid sampler settings or grammar")
            L.llama_sampler_chain_add(chain, sampler)

        if grammar:
            add(L.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root"))
        penalize = _penalizes(opts)
        if penalize:
            last_n = self._n_ctx if opts.repeat_last_n < 0 else opts.repeat_last_n
            add(
                L.llama_sampler_init_penalties(
                    self._n_vocab, last_n, opts.repeat_penalty, opts.frequency_penalty, opts.presence_penalty
                )
            )
        seed = L.LLAMA_DEFAULT_SEED if opts.seed < 0 else opts.seed & 0xFFFFFFFF
        if opts.temperature <= 0:
            add(L.llama_sampler_init_greedy())
        elif opts.mirostat == 1:
            add(L.llama_sampler_init_temp(opts.temperature))
            add(L.llama_sampler_init_mirostat(self._n_vocab, seed, opts.mirostat_tau, opts.mirostat_eta, 100))
        elif opts.mirostat == 2:
            add(L.llama_sampler_init_temp(opts.temperature))
            add(L.llama_sampler_init_mirostat_v2(seed, opts.mirostat_tau, opts.mirostat_eta))
        else:
            if opts.top_k > 0:
                add(L.llama_sampler_init_top_k(opts.top_k))
            if opts.typical_p < 1.0:
                add(L.llama_sampler_init_typical(opts.typical_p, 1))
            if opts.top_p < 1.0:
                add(L.llama_sampler_init_top_p(opts.top_p, 1))
            if opts.min_p > 0.0:
                add(L.llama_sampler_init_min_p(opts.min_p, 1))
            add(L.llama_sampler_init_temp(opts.temperature))
            add(L.llama_sampler_init_dist(seed))
        if not grammar and penalize:
            for token in history[-max(opts.repeat_last_n, 0) or len(history) :]:
                L.llama_sampler_accept(chain, token)
        return chain

    def _argmax(self) -> int:
        """Greedy pick straight from the logits: skips building llama.cpp's n_vocab candidate array."""
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self._ctx, -1), shape=(self._n_vocab,))
        return int(logits.argmax())

    # -- generation -----------------------------------------------------------------------
    def stream_sync(self, request: GenerationInput) -> Iterator[GenerationChunk]:
        started = time.perf_counter_ns()
        opts = request.options
        prompt = request.context + self.tokenize(request.prompt, add_special=not request.context)
        if not prompt:
            prompt = [L.llama_vocab_bos(self._vocab)]
        if len(prompt) >= self._n_ctx:
            raise BadRequest(
                f"the prompt is {len(prompt)} tokens, which does not fit the context window "
                f"of {self._n_ctx} tokens (num_ctx)"
            )
        reused = self._reuse_prefix(prompt)
        self._decode(prompt[reused:])
        prompt_done = time.perf_counter_ns()

        grammar = grammar_for(request.format, request.optional_call)
        greedy = opts.temperature <= 0 and not grammar and not _penalizes(opts)
        sampler = self._sampler(opts, grammar, prompt)
        room = self._n_ctx - len(prompt)
        limit = room if opts.num_predict < 0 else min(opts.num_predict, room)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(opts.stop)
        generated: list[int] = []
        reason, hit = "length", False
        try:
            while len(generated) < limit:
                token = self._argmax() if greedy else L.llama_sampler_sample(sampler, self._ctx, -1)
                if L.llama_vocab_is_eog(self._vocab, token):
                    reason = "stop"
                    break
                generated.append(token)
                text, hit = stops.feed(decoder.decode(self._piece(token)))
                if text:
                    yield GenerationChunk(text)
                if hit:
                    reason = "stop"
                    break
                if len(generated) < limit:
                    self._decode([token])
        finally:
            L.llama_sampler_free(sampler)
        tail = "" if hit else stops.feed(decoder.decode(b"", final=True))[0] + stops.flush()
        finished = time.perf_counter_ns()
        stats = GenerationStats(
            prompt_eval_count=len(prompt),
            prompt_eval_duration=prompt_done - started,
            eval_count=len(generated),
            eval_duration=finished - prompt_done,
            total_duration=finished - started,
        )
        yield GenerationChunk(tail, done=True, done_reason=reason, stats=stats, context=prompt + generated)
