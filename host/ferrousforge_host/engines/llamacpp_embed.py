"""llama.cpp engine for GGUF embedding models (nomic-embed-text, mxbai-embed-large, bge-m3 ...).

The context runs with ``embeddings = True`` and the pooling the GGUF names (``<arch>.pooling_type``:
mean, CLS or last token; none or not named: mean). One ``llama_decode`` takes several inputs, one
sequence each, up to ``num_batch`` tokens (an input longer than that goes alone: the window is one
micro-batch, as encoders need). Encoders have no KV cache; a causal model's is cleared before each
batch. An input longer than the window is cut to it, keeping its closing [SEP]/EOS (``truncate``
false: refused). Vectors are the model's own; the API normalises them.
"""

from __future__ import annotations

from typing import Any

import llama_cpp as L
import numpy as np

from ferrousforge.embedding import Embedded, EmbeddingMold, EmbedItem, token_outside_vocabulary
from ferrousforge.errors import BadRequest, ForgeError
from ferrousforge.mold import register_mold
from ferrousforge_host.engines.llamacpp import (
    Vocab,
    companion_bytes,
    load_gguf,
    new_context,
    placement,
    read_header,
)

POOLED = (L.LLAMA_POOLING_TYPE_MEAN, L.LLAMA_POOLING_TYPE_CLS, L.LLAMA_POOLING_TYPE_LAST)


@register_mold
class LlamaCppEmbeddingMold(EmbeddingMold):
    formats = ("gguf",)
    engine = "llama.cpp"
    native = True

    _model: Any = None
    _ctx: Any = None

    def load_sync(self) -> None:
        opts = self.options
        meta = read_header(self.spec)
        pooling = meta.get(f"{meta.get('general.architecture', '')}.pooling_type")
        self.pooling = pooling if pooling in POOLED else L.LLAMA_POOLING_TYPE_MEAN
        loaded = load_gguf(self.spec, meta, opts.num_gpu, 0)
        model = loaded.model
        trained = L.llama_model_n_ctx_train(model)
        window = min(opts.num_ctx, trained) if trained > 0 else opts.num_ctx
        cparams = L.llama_context_default_params()
        cparams.embeddings = True
        cparams.pooling_type = self.pooling
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = window
        cparams.n_seq_max = self.max_batch
        cparams.kv_unified = True  # a causal model's sequences share the window's cells
        ctx = new_context(loaded, cparams, self.spec, opts.num_thread, opts.flash_attention)
        self._model, self._ctx = model, ctx
        self.vocab = Vocab(L.llama_model_get_vocab(model))
        self.window = window
        self.budget = min(opts.num_batch, window)  # tokens per decode, unless one input is longer
        self.n_embd = L.llama_model_n_embd_out(model)
        self._batch = L.llama_batch_init(window, 0, 1)
        self._file_bytes = loaded.file_bytes + companion_bytes(self.spec)
        self._gpu_share = loaded.gpu_share

    def unload_sync(self) -> None:
        if self._ctx:
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
        if self._model:
            L.llama_model_free(self._model)
        self._ctx = self._model = None

    def is_loaded(self) -> bool:
        return self._ctx is not None

    def memory_bytes(self) -> int:
        return self._file_bytes if self.is_loaded() else 0

    def metadata(self) -> dict[str, Any]:
        if not self.is_loaded():
            return {**super().metadata(), "n_ctx": None}
        return {**super().metadata(), "n_ctx": self.window, **placement(self._gpu_share, self.memory_bytes())}

    def count_tokens(self, text: str) -> int:
        return len(self.vocab.tokenize(text))

    # -- inputs to tokens -----------------------------------------------------------------
    def tokens(self, item: EmbedItem) -> list[int]:
        """The input's tokens (special ones added), cut to the window or refused."""
        vocab = self.vocab
        if isinstance(item.text, str):
            ids = vocab.tokenize(item.text)
        else:
            ids = [int(t) for t in item.text]
            if (bad := next((t for t in ids if not 0 <= t < vocab.n_vocab), None)) is not None:
                raise token_outside_vocabulary(bad, vocab.n_vocab)
        if not ids:
            bos = L.llama_vocab_bos(vocab.vocab)
            if bos < 0:
                raise BadRequest("the input has no tokens to embed")
            ids = [bos]
        if len(ids) <= self.window:
            return ids
        if not item.truncate:
            raise BadRequest(
                f"input is {len(ids)} tokens, longer than the model's context of {self.window} "
                "(num_ctx); set truncate to true to cut it"
            )
        closing = (L.llama_vocab_sep(vocab.vocab), L.llama_vocab_eos(vocab.vocab))
        cut = ids[: self.window]
        if isinstance(item.text, str) and ids[-1] in closing:
            cut[-1] = ids[-1]  # keep [SEP] / EOS: CLS and last-token pooling read around it
        return cut

    # -- the engine primitive -------------------------------------------------------------
    def embed_sync(self, items: list[EmbedItem]) -> list[Embedded]:
        if not items:
            return []
        rows = [self.tokens(item) for item in items]  # all checked before any decode
        parts: list[np.ndarray] = []
        group: list[list[int]] = []
        for ids in rows:
            if group and (len(group) == self.max_batch or sum(map(len, group)) + len(ids) > self.budget):
                parts.append(self._decode(group))
                group = []
            group.append(ids)
        if group:
            parts.append(self._decode(group))
        vectors = np.concatenate(parts)
        return [Embedded(v, len(ids)) for v, ids in zip(vectors, rows, strict=True)]

    def _decode(self, group: list[list[int]]) -> np.ndarray:
        """One llama_decode over a group of sequences; their pooled vectors, one row each."""
        batch, n = self._batch, 0
        for seq, ids in enumerate(group):
            for pos, token in enumerate(ids):
                batch.token[n] = token
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = 1
                n += 1
        batch.n_tokens = n
        memory = L.llama_get_memory(self._ctx)
        if memory:  # a causal model: start each batch from an empty cache
            L.llama_memory_clear(memory, True)
        rc = L.llama_decode(self._ctx, batch)
        if rc != 0:
            raise ForgeError(f"llama_decode failed ({rc})")
        out = np.empty((len(group), self.n_embd), dtype=np.float32)
        for seq in range(len(group)):
            pooled = L.llama_get_embeddings_seq(self._ctx, seq)
            if not pooled:
                raise ForgeError("llama.cpp returned no embedding for the input")
            out[seq] = np.ctypeslib.as_array(pooled, shape=(self.n_embd,))
        return out
