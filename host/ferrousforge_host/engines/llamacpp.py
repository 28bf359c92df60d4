"""llama.cpp engine for GGUF text generation, on llama-cpp-python's low-level bindings.

One context holds ``num_parallel`` sequences (slots). A decode thread owns it: every step it builds
one batch with the next prompt chunk of requests that are starting and the last token of every request
that is generating, calls ``llama_decode`` once, and samples each request's next token from its own
logits with its own sampler chain (llama.cpp's, reading the logits in place; greedy reads the argmax
straight from them). Prompts compute logits only for their last token. A slot keeps its KV cache
after a request, so a new request that shares a token prefix with it (the turns of one chat) decodes
only the rest.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import json
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import llama_cpp as L
import numpy as np

from ferrousforge.errors import BadRequest, ForgeError
from ferrousforge.generation import (
    IMAGE_MARKER,
    MAX_TOKEN_CHARS,
    GenerationChunk,
    GenerationInput,
    GenerationStats,
    TextGenerationMold,
)
from ferrousforge.gguf import GGUFError, read_file_metadata
from ferrousforge.mold import ModelSpec, register_mold
from ferrousforge.options import Options
from ferrousforge.protocol.schema import check_schema
from ferrousforge.sampling import StopMatcher, common_prefix, penalizes, penalty_window
from ferrousforge_host import cores
from ferrousforge_host.engines import llamacpp_log
from ferrousforge_host.engines.llamacpp_vision import ImageSpan, Projector, Segment, free_chunks
from ferrousforge_host.engines.native import ModelLoadError, on_a_passing_thread, threads_for

log = logging.getLogger("ferrousforge")
L.llama_backend_init()

# llama-cpp-python's schema converter lets a JSON string hold raw control characters (llama.cpp's own
# converter excludes them): a model that emits a newline inside a string would give invalid JSON
_LOOSE_CHAR = r'char ::= [^"\\] |'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def grammar_for(
    fmt: str | dict[str, Any] | None,
    optional_call: dict[str, Any] | None = None,
    required: bool = False,
    single: bool = False,
) -> str | None:
    """GBNF for ``format`` ("json" for any JSON value, or a JSON schema), or for a reply of tool calls
    matching ``optional_call`` (one per line, or just one when ``single``), which unless ``required``
    may instead be free text not starting with "{"."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if fmt == "json":
        return JSON_GBNF
    schema = fmt or optional_call
    if not schema:
        return None
    check_schema(schema, "format")  # also checked where requests enter; grammars unroll these counts
    try:
        grammar: str = json_schema_to_gbnf(json.dumps(schema)).replace(_LOOSE_CHAR, _JSON_CHAR)
    except Exception as exc:
        raise BadRequest(f"cannot use this JSON schema: {exc}") from exc
    if fmt:
        return grammar
    more = "" if single else ' ("\\n" call)*'
    calls = grammar.replace("root ::=", "call ::=", 1) + f"\ncalls ::= call{more}\n"
    return calls + ("root ::= calls\n" if required else "root ::= calls | free\nfree ::= [^{] [^\\x00]*\n")


SHIFT_WINDOWS = 8  # with no num_predict, generation ends after this many context windows

# the KV cache's types: ggml's type, bytes per value (q8_0, q4_0: blocks of 32 values in 34, 18 bytes)
KV_TYPES = {
    "f16": (L.GGML_TYPE_F16, 2.0),
    "q8_0": (L.GGML_TYPE_Q8_0, 34 / 32),
    "q4_0": (L.GGML_TYPE_Q4_0, 18 / 32),
}
FLASH_ATTN = {
    "auto": L.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": L.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": L.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}


@cache
def gpu_backend() -> str:
    """The GPU backend this llama.cpp build offloads to ("cuda", "vulkan", "metal"), or "cpu": fixed
    for the process, and asked by every loaded model's metadata (in process: every embedding request)."""
    from ferrousforge_host.accelerators import llama_build

    return str(llama_build()["runs_on"])


def gpu_layers(num_gpu: int, n_layer: int, file_bytes: int, kv_bytes: int) -> int:
    """Layers to offload, as Ollama's ``num_gpu``: 0 keeps the model on the CPU, a number is taken as
    asked, -1 offloads as many as fit in the GPU's free memory beside the KV cache (all of them when
    the GPU's memory can't be read, as on unified-memory Macs)."""
    if num_gpu == 0 or not L.llama_supports_gpu_offload():
        return 0
    if num_gpu > 0:
        return num_gpu
    from ferrousforge_host.accelerators import free_gpu_memory

    free = free_gpu_memory()
    if free is None:
        return n_layer + 1
    per_layer = file_bytes / (n_layer + 1)
    room = free - kv_bytes - (512 << 20)  # compute buffers
    return max(0, min(n_layer + 1, int(room // per_layer)))


@dataclass
class LoadedGGUF:
    """A GGUF model loaded by llama.cpp: its header, the model, the share of it on the GPU, and its
    LoRA adapters (freed with the model)."""

    meta: dict[str, Any]
    model: Any
    file_bytes: int
    gpu_share: float  # offloaded layers / all layers (the output layer counts)
    adapters: list[Any] = field(default_factory=list)


def read_header(spec: ModelSpec) -> dict[str, Any]:
    try:
        return read_file_metadata(spec.path)
    except (GGUFError, OSError) as exc:
        raise ModelLoadError(f"cannot load '{spec.name}': {exc}") from exc


def load_gguf(spec: ModelSpec, meta: dict[str, Any], num_gpu: int, kv_bytes: int) -> LoadedGGUF:
    """Load the model with as many layers on the GPU as ``num_gpu`` asks for (gpu_layers)."""
    arch = meta.get("general.architecture", "")
    n_layer = int(meta.get(f"{arch}.block_count", 0) or 0)
    file_bytes = os.path.getsize(spec.path)
    mparams = L.llama_model_default_params()
    mparams.n_gpu_layers = gpu_layers(num_gpu, n_layer, file_bytes, kv_bytes)
    llamacpp_log.clear()
    model = on_a_passing_thread(L.llama_model_load_from_file, spec.path.encode(), mparams)
    if not model:
        why = llamacpp_log.reason(f"llama.cpp rejected {os.path.basename(spec.path)}")
        raise ModelLoadError(f"cannot load '{spec.name}': {why}")
    adapters = []
    for path in spec.adapters:
        adapter = L.llama_adapter_lora_init(model, path.encode())
        if not adapter:
            L.llama_model_free(model)
            raise ModelLoadError(f"cannot load '{spec.name}': llama.cpp rejected its LoRA adapter")
        adapters.append(adapter)
    share = min(mparams.n_gpu_layers, n_layer + 1) / (n_layer + 1)
    return LoadedGGUF(meta, model, file_bytes, share, adapters)


def head_sizes(meta: dict[str, Any]) -> tuple[int, int]:
    """The size of one attention head's key and value, as the GGUF's header says."""
    arch = meta.get("general.architecture", "")
    heads = int(meta.get(f"{arch}.attention.head_count", 1) or 1)
    embd = int(meta.get(f"{arch}.embedding_length", 0) or 0)
    key = int(meta.get(f"{arch}.attention.key_length", embd // max(heads, 1)) or 0)
    return key, int(meta.get(f"{arch}.attention.value_length", key) or 0)


def kv_cache_type(meta: dict[str, Any], options: Options) -> tuple[str, str]:
    """The KV cache type a load uses, and why it is not the one asked for: f16 (as Ollama falls back)
    where a quantized cache cannot be had, flash attention turned off or heads that are not whole
    blocks of 32 values."""
    asked = options.kv_cache_type
    if asked == "f16":
        return asked, ""
    if options.flash_attention == "off":
        return "f16", f"a {asked} KV cache needs flash attention, which is off"
    sizes = head_sizes(meta)
    if any(size % 32 for size in sizes):
        shown = "/".join(map(str, sizes))
        return "f16", f"a {asked} KV cache holds whole blocks of 32 values; this model's heads are {shown}"
    return asked, ""


def new_context(
    loaded: LoadedGGUF, cparams: Any, spec: ModelSpec, num_thread: int, flash_attention: str = "auto"
) -> Any:
    """A context on the model with the engines' common settings; the model is freed if it fails."""
    cparams.n_threads = cparams.n_threads_batch = threads_for(num_thread)
    cparams.flash_attn_type = FLASH_ATTN[flash_attention]
    cparams.no_perf = True
    ctx = L.llama_init_from_model(loaded.model, cparams)
    if not ctx:
        L.llama_model_free(loaded.model)
        raise ModelLoadError(f"cannot create a context for '{spec.name}' (num_ctx={cparams.n_ctx})")
    if n := len(loaded.adapters):  # each at full strength (scale 1), as Ollama applies them
        adapters = (L.llama_adapter_lora_p_ctypes * n)(*loaded.adapters)
        if L.llama_set_adapters_lora(ctx, adapters, n, (ctypes.c_float * n)(*[1.0] * n)) != 0:
            L.llama_free(ctx)
            L.llama_model_free(loaded.model)
            raise ModelLoadError(f"cannot apply the LoRA adapters of '{spec.name}'")
    return ctx


def placement(gpu_share: float, memory: int) -> dict[str, Any]:
    """What a loaded model reports about where it runs: the accelerator and its bytes on the GPU."""
    return {
        "accelerator": gpu_backend() if gpu_share > 0 else "cpu",
        "size_vram": int(memory * gpu_share),
    }


def companion_bytes(spec: ModelSpec) -> int:
    """The size of the files loaded beside the model: a vision model's projector, LoRA adapters."""
    paths = [spec.files.get("projector", ""), *spec.adapters]
    return sum(os.path.getsize(p) for p in paths if p and os.path.exists(p))


class Vocab:
    """llama.cpp's tokenizer of a loaded model: text to token ids, ids to byte pieces, end of generation."""

    def __init__(self, vocab: Any) -> None:
        self.vocab = vocab
        self.n_vocab = L.llama_vocab_n_tokens(vocab)
        self._pieces: dict[int, bytes] = {}

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        data = text.encode()
        size = len(data) + 8
        buf = (L.llama_token * size)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, True)
        if n < 0:
            size = -n
            buf = (L.llama_token * size)()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, size, add_special, True)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = L.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = L.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            piece = self._pieces[token] = buf.raw[:n]
        return piece

    def is_eog(self, token: int) -> bool:
        return bool(L.llama_vocab_is_eog(self.vocab, token))

    def fim(self) -> tuple[int, int, int] | None:
        """The fill-in-the-middle tokens (prefix, suffix, middle), or None when the model has none."""
        ids = (
            L.llama_vocab_fim_pre(self.vocab),
            L.llama_vocab_fim_suf(self.vocab),
            L.llama_vocab_fim_mid(self.vocab),
        )
        return ids if all(t >= 0 for t in ids) else None

    def _tokenize_fitting(self, request: GenerationInput, n_ctx: int, first: bool) -> list[int]:
        """The prompt's tokens; a text too long to fit in any case is cut (or refused) before it is
        tokenized, so that a huge prompt costs no more than one that fills the window."""
        text, bound = request.prompt, n_ctx * MAX_TOKEN_CHARS
        if len(text) <= bound:
            return self.tokenize(text, add_special=first)
        if not request.truncate:
            raise BadRequest(
                f"the prompt is {len(text)} characters, which does not fit the context window "
                f"of {n_ctx} tokens (num_ctx)"
            )
        keep = min(request.options.num_keep, n_ctx // 2)
        head = self.tokenize(text[: keep * MAX_TOKEN_CHARS], add_special=first)[:keep]
        return head + self.tokenize(text[-bound:], add_special=False)

    def check_context(self, context: list[int]) -> None:
        if (bad := next((t for t in context if not 0 <= t < self.n_vocab), None)) is not None:
            raise BadRequest(f"context token {bad} is outside the model's vocabulary of {self.n_vocab}")

    def prompt(self, request: GenerationInput, n_ctx: int) -> list[int]:
        """The request's tokens (an earlier exchange's context, then the prompt, or the FIM layout of
        prompt and suffix), checked against the vocabulary and fitted to the window: with
        ``truncate`` the first ``num_keep`` tokens and the newest are kept, as Ollama does."""
        self.check_context(request.context)
        first = not request.context
        if request.suffix:
            fim = self.fim()
            if fim is None:
                raise BadRequest("this model does not support insert: its vocabulary has no FIM tokens")
            pre, suf, mid = fim
            body = [
                pre,
                *self.tokenize(request.prompt, False),
                suf,
                *self.tokenize(request.suffix, False),
                mid,
            ]
            prompt = request.context + (self.tokenize("", True) if first else []) + body
        else:
            prompt = request.context + self._tokenize_fitting(request, n_ctx, first)
        if not prompt:
            prompt = [L.llama_vocab_bos(self.vocab)]
        if len(prompt) >= n_ctx:
            if not request.truncate:
                raise BadRequest(
                    f"the prompt is {len(prompt)} tokens, which does not fit the context window "
                    f"of {n_ctx} tokens (num_ctx)"
                )
            keep = min(request.options.num_keep, n_ctx // 2)
            prompt = prompt[:keep] + prompt[len(prompt) - (n_ctx - 1 - keep) :]
        return prompt


def apply_penalties(logits: np.ndarray, window: list[int], opts: Options) -> None:
    """llama.cpp's repeat, frequency and presence penalties, applied in place to the logits of the
    tokens in the window only (llama.cpp's sampler visits every entry of the vocabulary)."""
    if not window:
        return
    ids, counts = np.unique(np.asarray(window, dtype=np.int64), return_counts=True)
    if ids[0] < 0:  # an image's positions in the prompt (llamacpp_vision.image_id): no token to penalize
        counts, ids = counts[ids >= 0], ids[ids >= 0]
    values = logits[ids]
    if opts.repeat_penalty != 1.0:
        values = np.where(values <= 0, values * opts.repeat_penalty, values / opts.repeat_penalty)
    values -= counts * opts.frequency_penalty + opts.presence_penalty
    logits[ids] = values


def logprob_entry(raw: bytes, logprob: float | None) -> dict[str, Any]:
    """Ollama's entry for one token: its text, log-probability (None: nothing came before it), bytes."""
    return {"token": raw.decode(errors="replace"), "logprob": logprob, "bytes": list(raw)}


def token_logprobs(logits: np.ndarray, token: int, top: int, piece: Callable[[int], bytes]) -> dict[str, Any]:
    """Ollama's logprob entry for ``token``: its log-probability and the ``top`` most likely."""
    peak = float(logits.max())
    log_total = peak + float(np.log(np.exp(logits - peak, dtype=np.float32).sum()))

    def entry(t: int) -> dict[str, Any]:
        return logprob_entry(piece(t), float(logits[t]) - log_total)

    out = entry(token)
    if top > 0:
        best = np.argpartition(logits, -top)[-top:]
        best = best[np.argsort(-logits[best])]
        out["top_logprobs"] = [entry(int(t)) for t in best]
    else:
        out["top_logprobs"] = []
    return out


@dataclass
class _Job:
    """One request in the decode loop."""

    request: GenerationInput
    emit: Callable[[GenerationChunk | BaseException], object]
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: int = field(default_factory=time.perf_counter_ns)
    prompt: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet decoded
    generated: list[int] = field(default_factory=list)
    sampler: Any = None
    grammar: Any = None  # llama.cpp's grammar sampler, checked after the chain picks (constrain)
    greedy: bool = False
    limit: int = 0
    prompt_done: int = 0
    decoder: Any = None
    stops: StopMatcher | None = None
    batch_index: int = -1  # where its logits are in the current batch, or -1
    penalized: bool = False
    logprobs: list[dict[str, Any]] = field(default_factory=list)  # entries not yet sent with text
    prompt_rows: list[int] = field(default_factory=list)  # batch rows of prompt tokens to score
    bias_ids: Any = None  # logit_bias: these tokens' logits get bias_values added before sampling
    bias_values: Any = None
    prompt_logprobs: list[dict[str, Any]] = field(default_factory=list)  # the scored prompt so far
    media: list[Segment] = field(default_factory=list)  # a prompt with images: what comes before `pending`
    chunks: Any = None  # ... and libmtmd's chunk list that holds its images


def free_native(job: _Job) -> None:
    """Free what a job holds in llama.cpp: its samplers, and its images' chunks."""
    for sampler in (job.sampler, job.grammar):
        if sampler:
            L.llama_sampler_free(sampler)
    job.sampler = job.grammar = None
    free_chunks(job.chunks)
    job.chunks, job.media = None, []


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # llama_token_data


def candidates(logits: np.ndarray) -> tuple[np.ndarray, Any]:
    """Every token as llama.cpp's candidate array (the numpy array holds its memory)."""
    data = np.empty(len(logits), _TOKEN_DATA)
    data["id"] = np.arange(len(logits), dtype=np.int32)
    data["logit"] = logits
    data["p"] = 0.0
    pointer = data.ctypes.data_as(ctypes.POINTER(L.llama_token_data))
    return data, L.llama_token_data_array(pointer, len(logits), -1, False)


def allowed(grammar: Any, token: int, logit: float) -> bool:
    one = L.llama_token_data(token, logit, 0.0)
    array = L.llama_token_data_array(ctypes.pointer(one), 1, -1, False)
    L.llama_sampler_apply(grammar, ctypes.byref(array))
    return bool(np.isfinite(one.logit))


def constrain(job: _Job, logits: np.ndarray) -> int:
    """The next token under a grammar, as llama-server picks it: the sampler chain chooses from every
    token; only if the grammar refuses that token is it applied to all of them (262,144 for Gemma,
    each checked against the grammar's stacks) and the chain chooses again."""
    if job.greedy:
        token = int(logits.argmax())
    else:
        data, array = candidates(logits)
        L.llama_sampler_apply(job.sampler, ctypes.byref(array))
        token = int(data["id"][array.selected])
    if not allowed(job.grammar, token, float(logits[token])):
        data, array = candidates(logits)
        L.llama_sampler_apply(job.grammar, ctypes.byref(array))
        if job.greedy:
            token = int(data["id"][int(data["logit"].argmax())])
        else:
            L.llama_sampler_apply(job.sampler, ctypes.byref(array))
            token = int(data["id"][array.selected])
    if not job.greedy:
        L.llama_sampler_accept(job.sampler, token)
    L.llama_sampler_accept(job.grammar, token)
    return token


@dataclass
class _Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV this sequence holds
    job: _Job | None = None


@register_mold
class LlamaCppMold(TextGenerationMold):
    formats = ("gguf",)
    engine = "llama.cpp"
    native = True

    _model: Any = None
    _ctx: Any = None
    _projector: Projector | None = None  # a vision model's image encoder
    _image_positions = 0  # ... and the positions an image takes (Projector.positions_per_image)

    def load_sync(self) -> None:
        opts = self.options
        meta = read_header(self.spec)
        self._kv_type, why = kv_cache_type(meta, opts)
        if why:
            log.warning("%s: %s; using f16", self.spec.name, why)
        loaded = load_gguf(
            self.spec,
            meta,
            opts.num_gpu,
            self._estimate_kv(meta, opts.num_ctx * opts.num_parallel, self._kv_type),
        )
        model = loaded.model
        n_ctx_train = L.llama_model_n_ctx_train(model)
        per_seq = min(opts.num_ctx, n_ctx_train) if n_ctx_train > 0 else opts.num_ctx
        cparams = L.llama_context_default_params()
        cparams.n_seq_max = opts.num_parallel
        cparams.n_ctx = per_seq * opts.num_parallel
        cparams.n_batch = cparams.n_ubatch = min(opts.num_batch, cparams.n_ctx)
        cparams.kv_unified = False  # each sequence attends only to its own cells
        cparams.type_k = cparams.type_v = KV_TYPES[self._kv_type][0]
        ctx = new_context(loaded, cparams, self.spec, opts.num_thread, opts.flash_attention)
        self._model, self._ctx = model, ctx
        self._threads = self._threads_now = cparams.n_threads
        projector = self.spec.files.get("projector")
        if projector:
            try:
                self._projector = Projector(projector, model, self._threads, loaded.gpu_share > 0)
                self._image_positions = self._projector.positions_per_image()
            except ModelLoadError:
                L.llama_free(ctx)
                L.llama_model_free(model)
                self._ctx = self._model = None
                raise
        self._vocab = L.llama_model_get_vocab(model)
        self.vocab = Vocab(self._vocab)
        self._n_vocab = self.vocab.n_vocab
        self._n_ctx = L.llama_n_ctx_seq(ctx)  # the window of one request
        self._n_batch = cparams.n_batch
        self._batch = L.llama_batch_init(self._n_batch, 0, 1)
        self._memory = L.llama_get_memory(ctx)
        self._kv_bytes = self._estimate_kv(meta, L.llama_n_ctx(ctx), self._kv_type)
        self._file_bytes = loaded.file_bytes + companion_bytes(self.spec)
        self._gpu_share = loaded.gpu_share
        self._slots = [_Slot(i) for i in range(opts.num_parallel)]
        self._incoming: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._waiting: list[_Job] = []
        self._thread = threading.Thread(target=self._loop, name=f"llama-{self.spec.name}", daemon=True)
        self._thread.start()

    def unload_sync(self) -> None:
        if self._ctx:
            self._incoming.put(None)
            self._thread.join()
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
        if self._projector:
            self._projector.close()
        if self._model:
            L.llama_model_free(self._model)
        self._ctx = self._model = self._projector = None

    def is_loaded(self) -> bool:
        return self._ctx is not None

    def memory_bytes(self) -> int:
        return self._file_bytes + self._kv_bytes if self.is_loaded() else 0

    def metadata(self) -> dict[str, Any]:
        if not self.is_loaded():
            return {**super().metadata(), "n_ctx": None}
        return {
            **super().metadata(),
            "n_ctx": self._n_ctx,
            "kv_cache_type": self._kv_type,
            **placement(self._gpu_share, self.memory_bytes()),
        }

    @staticmethod
    def _estimate_kv(meta: dict[str, Any], n_ctx: int, kv_type: str) -> int:
        arch = meta.get("general.architecture", "")
        layers = int(meta.get(f"{arch}.block_count", 0) or 0)
        heads = int(meta.get(f"{arch}.attention.head_count", 1) or 1)
        kv_heads = meta.get(f"{arch}.attention.head_count_kv", heads)
        kv_heads = int(kv_heads if isinstance(kv_heads, int) else heads)
        key, value = head_sizes(meta)
        return int(layers * n_ctx * kv_heads * (key + value) * KV_TYPES[kv_type][1])

    @classmethod
    def estimate_bytes(cls, spec: ModelSpec, options: Options) -> int:
        """Memory a load would take: the weights plus the KV cache of every slot."""
        path = spec.path
        try:
            meta = read_file_metadata(path)
        except (GGUFError, OSError):
            return os.path.getsize(path) + companion_bytes(spec)
        arch = meta.get("general.architecture", "")
        trained = int(meta.get(f"{arch}.context_length", options.num_ctx) or options.num_ctx)
        return (
            os.path.getsize(path)
            + companion_bytes(spec)
            + cls._estimate_kv(
                meta,
                min(options.num_ctx, trained) * options.num_parallel,
                kv_cache_type(meta, options)[0],
            )
        )

    # -- tokens ---------------------------------------------------------------------------
    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        return self.vocab.tokenize(text, add_special)

    def count_tokens(self, text: str) -> int:
        """The prompt's tokens; a vision model counts each IMAGE_MARKER as the positions an image takes."""
        images = text.count(IMAGE_MARKER) if self._projector else 0
        if images:
            text = text.replace(IMAGE_MARKER, "")
        return len(self.tokenize(text)) + images * self._image_positions

    def _sampler(self, opts: Options) -> Any:
        """llama.cpp's sampler chain; penalties are applied to the logits before it (apply_penalties),
        a grammar after it (constrain)."""
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            if not sampler:
                L.llama_sampler_free(chain)
                raise BadRequest("invalid sampler settings")
            L.llama_sampler_chain_add(chain, sampler)

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
        return chain

    # -- the request side ---------------------------------------------------------------
    def _prepare(self, job: _Job) -> None:
        """Tokenize and validate on the caller's side, so errors come back before any slot is used."""
        req = job.request
        prompt = self._prompt_with_images(job) if req.images else self.vocab.prompt(req, self._n_ctx)
        grammar = grammar_for(req.format, req.optional_call, req.call_required, req.single_call)
        opts = req.options
        if not 0 <= req.top_logprobs <= 20:
            raise BadRequest("'top_logprobs' must be between 0 and 20")
        if outside := [t for t in req.logit_bias if not 0 <= t < self._n_vocab]:
            raise BadRequest(f"logit_bias names token {outside[0]}, not in the model's vocabulary")
        if req.logit_bias:
            job.bias_ids = np.fromiter(req.logit_bias, np.int64, len(req.logit_bias))
            job.bias_values = np.fromiter(req.logit_bias.values(), np.float32, len(req.logit_bias))
        job.prompt = prompt
        job.greedy = opts.temperature <= 0
        job.penalized = penalizes(opts)
        job.sampler = self._sampler(opts)
        if grammar:
            job.grammar = L.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
            if not job.grammar:
                raise BadRequest("invalid grammar")
        if req.shift and not req.images and L.llama_memory_can_shift(self._memory):
            room = SHIFT_WINDOWS * self._n_ctx  # the window shifts; this bounds a runaway generation
        else:
            room = self._n_ctx - len(prompt)
        job.limit = room if opts.num_predict < 0 else min(opts.num_predict, room)
        job.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        job.stops = StopMatcher(opts.stop)

    def _prompt_with_images(self, job: _Job) -> list[int]:
        """The tokens of a prompt with images, an image's positions holding its negative id; the images
        and the text before the last run of tokens go to ``job.media``, evaluated when the job starts
        (what a slot's cache already holds of them, the same tokens and images before, is kept)."""
        req = job.request
        if self._projector is None:
            raise BadRequest(f"model '{self.spec.name}' does not support images: it has no projector")
        if req.suffix or req.prompt_logprobs:
            raise BadRequest("a prompt with images can't have a suffix or be scored (echo with logprobs)")
        self.vocab.check_context(req.context)
        segments, job.chunks = self._projector.tokenize(req.prompt, req.images, add_special=not req.context)
        if req.context:
            segments.insert(0, list(req.context))
        prompt = [t for s in segments for t in (s if isinstance(s, list) else [s.id] * s.n_pos)]
        problem = None
        if not isinstance(segments[-1], list):
            problem = "a prompt with images needs text after the last image"
        elif len(prompt) >= self._n_ctx:
            problem = (
                f"the prompt and its images are {len(prompt)} tokens, which does not fit the context "
                f"window of {self._n_ctx} tokens (num_ctx)"
            )
        if problem:
            raise BadRequest(problem)
        job.media = segments[:-1]
        return prompt

    def start(
        self, request: GenerationInput, emit: Callable[[GenerationChunk | BaseException], object]
    ) -> Callable[[], None]:
        """Queue a request whose chunks ``emit`` receives on the decode thread, in the order they are
        made across all requests; returns the function that cancels it."""
        return self._submit(request, emit).cancelled.set

    def _submit(
        self, request: GenerationInput, emit: Callable[[GenerationChunk | BaseException], object]
    ) -> _Job:
        job = _Job(request, emit)
        try:
            self._prepare(job)
        except BaseException:
            free_native(job)  # what it took in llama.cpp before it failed (samplers, images)
            raise
        self._incoming.put(job)
        return job

    def stream_sync(self, request: GenerationInput) -> Iterator[GenerationChunk]:
        out: queue.SimpleQueue[GenerationChunk | BaseException] = queue.SimpleQueue()
        job = self._submit(request, out.put)
        try:
            while True:
                item = out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.done:
                    return
        finally:
            job.cancelled.set()

    async def stream(self, request: GenerationInput) -> AsyncIterator[GenerationChunk]:
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()
        job = self._submit(request, lambda item: loop.call_soon_threadsafe(out.put_nowait, item))
        try:
            while True:
                item = await out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.done:
                    return
        finally:
            job.cancelled.set()  # a client that went away frees its slot at the next step

    # -- the decode loop ------------------------------------------------------------------
    def _loop(self) -> None:
        running = True
        while running:
            active = [s for s in self._slots if s.job]
            block = not active and not self._waiting
            try:
                while True:
                    job = self._incoming.get(block=block)
                    block = False
                    if job is None:
                        running = False
                        break
                    self._waiting.append(job)
            except queue.Empty:
                pass
            if not running:
                break
            self._assign()
            try:
                self._step()
            except Exception as exc:  # the context is in an unknown state: fail its requests, start clean
                for slot in self._slots:
                    if slot.job:
                        slot.job.emit(exc if isinstance(exc, ForgeError) else ForgeError(f"llama.cpp: {exc}"))
                        self._release(slot, keep_cache=False)
                L.llama_memory_clear(self._memory, True)
        for slot in self._slots:
            if slot.job:
                slot.job.emit(ForgeError("the model was unloaded"))
                self._release(slot, keep_cache=False)
        for job in self._waiting:
            job.emit(ForgeError("the model was unloaded"))
            free_native(job)

    def _assign(self) -> None:
        """Give waiting requests free slots, preferring the slot whose cache shares the longest prefix."""
        self._waiting = [j for j in self._waiting if not self._drop_if_cancelled(j)]
        while self._waiting:
            free = [s for s in self._slots if s.job is None]
            if not free:
                return
            job = self._waiting.pop(0)
            slot = max(free, key=lambda s: common_prefix(s.cached, job.prompt))
            keep = min(common_prefix(slot.cached, job.prompt), len(job.prompt) - 1)
            if job.request.prompt_logprobs:  # every prompt token is scored: none comes from the cache
                keep = 0
            if keep < len(slot.cached) and (
                keep == 0 or not L.llama_memory_seq_rm(self._memory, slot.seq, keep, -1)
            ):
                L.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
                keep = 0
            slot.cached = job.prompt[:keep]
            job.pending = job.prompt[keep:]
            slot.job = job

    def _drop_if_cancelled(self, job: _Job) -> bool:
        if job.cancelled.is_set():
            free_native(job)
            return True
        return False

    def _evaluate_media(self) -> None:
        """Decode the images of starting requests, and the text around them, into their sequences,
        leaving each one's last run of tokens to the step's batch (whose logits it samples from)."""
        for slot in self._slots:
            job = slot.job
            if job is None or not job.media or job.cancelled.is_set():
                continue
            projector = self._projector
            assert projector is not None
            try:
                start = 0  # where the segment starts in the prompt; what the slot's cache holds is kept
                for segment in job.media:
                    if isinstance(segment, ImageSpan):
                        end = start + segment.n_pos
                        if end > len(slot.cached):
                            if start < len(slot.cached):  # (an image is cached whole or not at all)
                                L.llama_memory_seq_rm(self._memory, slot.seq, start, -1)
                                del slot.cached[start:]
                            projector.evaluate(self._ctx, segment, start, slot.seq, self._n_batch)
                            slot.cached.extend([segment.id] * segment.n_pos)
                    else:
                        end = start + len(segment)
                        if end > len(slot.cached):
                            self._decode_tokens(slot, segment[len(slot.cached) - start :])
                    start = end
            except ForgeError as exc:
                job.emit(exc)
                self._release(slot, keep_cache=False)
                continue
            job.pending = job.prompt[len(slot.cached) :]
            free_chunks(job.chunks)
            job.chunks, job.media = None, []

    def _decode_tokens(self, slot: _Slot, tokens: list[int]) -> None:
        """Decode a run of prompt tokens into a slot's sequence, no logits."""
        for start in range(0, len(tokens), self._n_batch):
            part = tokens[start : start + self._n_batch]
            for k, token in enumerate(part):
                self._put(k, token, len(slot.cached) + k, slot.seq, False)
            self._batch.n_tokens = len(part)
            if (rc := L.llama_decode(self._ctx, self._batch)) != 0:
                raise ForgeError(f"llama_decode failed ({rc})")
            slot.cached.extend(part)

    def _step(self) -> None:
        self._evaluate_media()
        batch, n = self._batch, 0
        for slot in self._slots:  # a slot the batch fills up before has no row in this decode
            if slot.job is not None:
                slot.job.batch_index = -1
        for slot in self._slots:
            job = slot.job
            if job is None:
                continue
            if job.cancelled.is_set():
                self._release(slot, keep_cache=True)
                continue
            if job.pending:  # prompt: as much as fits, logits only for its very last token (or all, scored)
                take = job.pending[: self._n_batch - n]
                scored = job.request.prompt_logprobs
                for k, token in enumerate(take):
                    self._put(n, token, len(slot.cached) + k, slot.seq, scored)
                    if scored:
                        job.prompt_rows.append(n)
                    n += 1
                slot.cached.extend(take)
                del job.pending[: len(take)]
                if not job.pending:
                    batch.logits[n - 1] = 1
                    job.batch_index = n - 1
            elif job.generated and n < self._n_batch:  # generation: the last sampled token
                if len(slot.cached) >= self._n_ctx and not self._shift(slot, job):
                    continue
                self._put(n, job.generated[-1], len(slot.cached), slot.seq, True)
                slot.cached.append(job.generated[-1])
                job.batch_index = n
                n += 1
            if n >= self._n_batch:
                break
        if n == 0:
            return
        batch.n_tokens = n
        threads = cores.busy().share(self._threads)  # fewer while other models generate too
        if threads != self._threads_now:
            L.llama_set_n_threads(self._ctx, threads, threads)
            self._threads_now = threads
        rc = L.llama_decode(self._ctx, batch)
        if rc != 0:
            raise ForgeError(f"llama_decode failed ({rc})")
        L.llama_synchronize(self._ctx)  # a GPU backend returns before computing: time the work itself
        now = time.perf_counter_ns()
        for slot in self._slots:
            job = slot.job
            if job is not None and job.prompt_rows:  # scored before its reply's first token
                self._score_prompt(job)
            if job is not None and job.batch_index >= 0:
                if not job.prompt_done:
                    job.prompt_done = now
                self._sample(slot, job)

    def _score_prompt(self, job: _Job) -> None:
        """Each prompt token's logprob given those before it, from the rows this decode computed;
        sent on their own once the whole prompt is scored, before any reply."""
        request, scored = job.request, job.prompt_logprobs
        if not scored:  # the first token has nothing before it
            scored.append({**logprob_entry(self.vocab.piece(job.prompt[0]), None), "top_logprobs": []})
        for row in job.prompt_rows:
            if len(scored) < len(job.prompt):  # (the last row's logits are the reply's first token's)
                pointer = L.llama_get_logits_ith(self._ctx, row)
                logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
                target = job.prompt[len(scored)]
                scored.append(token_logprobs(logits, target, request.top_logprobs, self.vocab.piece))
        job.prompt_rows.clear()
        if not job.pending:
            job.emit(GenerationChunk("", prompt_logprobs=scored))

    def _shift(self, slot: _Slot, job: _Job) -> bool:
        """Make room in a full window as Ollama does: keep the first ``num_keep`` tokens, drop half of
        the rest, move the newer half's positions down. False (the request ends) where it can't."""
        if not job.request.shift or job.request.images or not L.llama_memory_can_shift(self._memory):
            self._finish(slot, job, "length", "")
            return False
        keep = min(job.request.options.num_keep, self._n_ctx // 2)
        discard = (len(slot.cached) - keep) // 2
        L.llama_memory_seq_rm(self._memory, slot.seq, keep, keep + discard)
        L.llama_memory_seq_add(self._memory, slot.seq, keep + discard, -1, -discard)
        del slot.cached[keep : keep + discard]
        return True

    def _put(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def _sample(self, slot: _Slot, job: _Job) -> None:
        request = job.request
        if job.limit <= 0:  # num_predict 0 (or a prompt that fills the window): no reply at all
            self._finish(slot, job, "length", "")
            return
        logits = None
        biased = job.bias_ids is not None
        if job.greedy or job.penalized or biased or request.logprobs or job.grammar is not None:
            pointer = L.llama_get_logits_ith(self._ctx, job.batch_index)
            logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,))
            if biased:  # in place, before the penalties (as llama.cpp's common sampler orders them)
                logits[job.bias_ids] += job.bias_values
            if job.penalized:  # in place: the sampler chain reads the same memory
                opts = request.options
                apply_penalties(logits, penalty_window(job.prompt + job.generated, opts, self._n_ctx), opts)
        if job.grammar is not None:
            assert logits is not None
            token = constrain(job, logits)
        elif job.greedy:
            assert logits is not None
            token = int(logits.argmax())
        else:
            token = L.llama_sampler_sample(job.sampler, self._ctx, job.batch_index)
        if request.logprobs and logits is not None and not self.vocab.is_eog(token):
            job.logprobs.append(token_logprobs(logits, token, request.top_logprobs, self.vocab.piece))
        assert job.stops is not None
        if self.vocab.is_eog(token):
            self._finish(slot, job, "stop", "")
            return
        job.generated.append(token)
        text, hit = job.stops.feed(job.decoder.decode(self.vocab.piece(token)))
        if hit:
            job.logprobs = job.stops.said(job.logprobs)  # no logprobs for the stop string's tokens
            if text:
                self._emit(job, text)
            self._finish(slot, job, "stop", "", flush=False)
            return
        if len(job.generated) >= job.limit:
            if text:
                self._emit(job, text)
            self._finish(slot, job, "length", "")
            return
        if text:
            self._emit(job, text)

    @staticmethod
    def _emit(job: _Job, text: str) -> None:
        """A piece of text, with the logprobs of the tokens sampled since the last piece."""
        logprobs, job.logprobs = (job.logprobs or None), []
        job.emit(GenerationChunk(text, logprobs=logprobs))

    def _finish(self, slot: _Slot, job: _Job, reason: str, text: str, flush: bool = True) -> None:
        assert job.stops is not None
        if flush:
            text += job.stops.feed(job.decoder.decode(b"", final=True))[0] + job.stops.flush()
        finished = time.perf_counter_ns()
        prompt_done = job.prompt_done or finished
        stats = GenerationStats(
            prompt_eval_count=len(job.prompt),
            prompt_eval_duration=prompt_done - job.started,
            eval_count=len(job.generated),
            eval_duration=finished - prompt_done,
            total_duration=finished - job.started,
        )
        job.emit(
            GenerationChunk(
                text,
                done=True,
                done_reason=reason,
                stats=stats,
                context=[t for t in job.prompt if t >= 0] + job.generated,  # no image's positions
                logprobs=job.logprobs or None,
                stop_sequence=job.stops.matched,
            )
        )
        self._release(slot, keep_cache=True)

    def _release(self, slot: _Slot, keep_cache: bool) -> None:
        job = slot.job
        slot.job = None
        if job is not None:
            free_native(job)
        if not keep_cache:
            L.llama_memory_seq_rm(self._memory, slot.seq, -1, -1)
            slot.cached = []
