"""ONNX Runtime engine for embedding (bi-encoder) and rerank (cross-encoder) models.

Tokenizes with ``tokenizers`` (the model's tokenizer.json), runs one session call per batch, and
pools as the model's own sentence-transformers config says (mean, CLS, max, last token; normalise).
CUDA is used when onnxruntime-gpu offers it, else the CPU provider.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from ferrousforge.embedding import (
    Embedded,
    EmbeddingMold,
    EmbedItem,
    RerankMold,
    Scored,
    ScoreItem,
    check_length,
    token_outside_vocabulary,
)
from ferrousforge.errors import BadRequest, ForgeError
from ferrousforge.mold import ModelSpec, register_mold
from ferrousforge.options import Options
from ferrousforge_host.engines.native import ModelLoadError, threads_for


class OnnxSession:
    """The parts both Molds share: session, tokenizer, feeds."""

    session: Any = None
    tokenizer: Tokenizer
    max_length: int
    input_names: set[str]

    def open(self, model_path: str, tokenizer_path: str | None, config: dict[str, Any], threads: int) -> None:
        self.open_tokenizer(tokenizer_path, config)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads_for(threads)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()
        ]
        try:
            self.session = ort.InferenceSession(model_path, options, providers=providers)
        except Exception as exc:
            raise ModelLoadError(f"cannot load ONNX model: {exc}") from exc
        self.input_names = {i.name for i in self.session.get_inputs()}

    def open_tokenizer(self, tokenizer_path: str | None, config: dict[str, Any]) -> None:
        if not tokenizer_path:
            raise ModelLoadError("ONNX model has no tokenizer.json layer")
        try:
            self.tokenizer = Tokenizer.from_file(tokenizer_path)
        except Exception as exc:
            raise ModelLoadError(f"cannot load the model's tokenizer: {exc}") from exc
        self.max_length = int(config.get("max_length") or 512)
        self.tokenizer.no_truncation()
        pad_id = self.tokenizer.token_to_id("[PAD]") or self.tokenizer.token_to_id("<pad>") or 0
        self.tokenizer.enable_padding(pad_id=pad_id)

    def close(self) -> None:
        self.session = None

    def check_lengths(self, encodings: list[Encoding], truncate: list[bool]) -> None:
        for enc, cut in zip(encodings, truncate, strict=True):
            check_length(sum(enc.attention_mask), self.max_length, cut)

    def run(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = types
        try:
            out: np.ndarray = self.session.run(None, feeds)[0]
        except Exception as exc:  # e.g. out of memory
            raise ForgeError(f"onnxruntime failed: {exc}") from exc
        return out

    def encode(self, batch: list[Any], truncate: list[bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tokenize and pad a batch (texts, or (query, document) pairs)."""
        if all(truncate):  # the tokenizer cuts properly (pairs: longest first, special tokens kept)
            self.tokenizer.enable_truncation(self.max_length)
        else:
            self.tokenizer.no_truncation()
        encodings = self.tokenizer.encode_batch(batch)
        self.check_lengths(encodings, truncate)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)[:, : self.max_length]
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)[:, : self.max_length]
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)[:, : self.max_length]
        return ids, mask, types


class OnnxLifecycle:
    """Load, unload and size, the same for both ONNX Molds."""

    spec: ModelSpec
    options: Options
    onnx: OnnxSession | None = None

    session_class: type[OnnxSession] = OnnxSession

    def load_sync(self) -> None:
        self.onnx = self.session_class()
        self.onnx.open(
            self.spec.path, self.spec.files.get("tokenizer.json"), self.spec.config, self.options.num_thread
        )

    def unload_sync(self) -> None:
        if self.onnx is not None:
            self.onnx.close()

    def is_loaded(self) -> bool:
        return self.onnx is not None and self.onnx.session is not None

    def memory_bytes(self) -> int:
        return os.path.getsize(self.spec.path) if self.is_loaded() else 0

    def metadata(self) -> dict[str, Any]:
        base: dict[str, Any] = super().metadata()  # type: ignore[misc]
        providers = self.session.session.get_providers() if self.is_loaded() else []
        return {**base, "accelerator": "cuda" if providers[:1] == ["CUDAExecutionProvider"] else "cpu"}

    @property
    def session(self) -> OnnxSession:
        assert self.onnx is not None, "model is not loaded"
        return self.onnx


@register_mold
class OnnxEmbeddingMold(OnnxLifecycle, EmbeddingMold):
    formats = ("onnx",)
    engine = "onnxruntime"
    native = True

    def load_sync(self) -> None:
        super().load_sync()
        self.pooling = self.spec.config.get("pooling", "mean")
        self.normalize = bool(self.spec.config.get("normalize", False))

    def _token_batch(self, items: list[EmbedItem]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        limit, vocab = self.session.max_length, self.session.tokenizer.get_vocab_size()
        rows: list[list[int]] = []
        for item in items:
            given = [int(t) for t in item.text]  # token ids: the model's own, used as they are
            if (bad := next((t for t in given if t >= vocab), None)) is not None:
                raise token_outside_vocabulary(bad, vocab)
            if len(given) > limit and not item.truncate:
                raise BadRequest(f"input is {len(given)} tokens, longer than the model's limit of {limit}")
            rows.append(given[:limit])
        width = max(len(r) for r in rows)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return ids, mask, np.zeros_like(ids)

    def embed_sync(self, items: list[EmbedItem]) -> list[Embedded]:
        texts = [k for k, item in enumerate(items) if isinstance(item.text, str)]
        if 0 < len(texts) < len(items):  # a batch of texts and token arrays: run each group, keep order
            tokens = [k for k in range(len(items)) if k not in set(texts)]
            out: dict[int, Embedded] = {}
            for group in (texts, tokens):
                out.update(zip(group, self.embed_sync([items[k] for k in group]), strict=True))
            return [out[k] for k in range(len(items))]
        if texts:
            ids, mask, types = self.session.encode([i.text for i in items], [i.truncate for i in items])
        else:
            ids, mask, types = self._token_batch(items)
        vectors = self.pooled(ids, mask, types)
        if self.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        counts = mask.sum(axis=1)
        return [Embedded(v, int(n)) for v, n in zip(vectors.astype(np.float32), counts, strict=True)]

    def pooled(self, ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        """One vector per input: the encoder's hidden states, pooled."""
        return pool(self.session.run(ids, mask, types), mask, self.pooling)


def pool(hidden: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    m = mask[..., None].astype(hidden.dtype)
    if how == "cls":
        return hidden[:, 0]
    if how == "max":
        return np.where(m > 0, hidden, -np.inf).max(axis=1)
    if how == "last":
        last = mask.sum(axis=1) - 1
        return hidden[np.arange(hidden.shape[0]), last]
    return (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)


@register_mold
class OnnxRerankMold(OnnxLifecycle, RerankMold):
    formats = ("onnx",)
    engine = "onnxruntime"
    native = True

    def score_sync(self, items: list[ScoreItem]) -> list[Scored]:
        ids, mask, types = self.session.encode(
            [(i.query, i.document) for i in items], [i.truncate for i in items]
        )
        logits = self.session.run(ids, mask, types)
        if logits.ndim == 1 or logits.shape[-1] == 1:  # one relevance logit → sigmoid
            scores = 1.0 / (1.0 + np.exp(-logits.reshape(-1)))
        elif logits.shape[-1] == 2:  # two classes → probability of "relevant"
            e = np.exp(logits - logits.max(axis=-1, keepdims=True))
            scores = (e / e.sum(axis=-1, keepdims=True))[:, 1]
        else:
            raise ForgeError(f"rerank model has {logits.shape[-1]} outputs; expected 1 or 2")
        return [Scored(float(s), int(n)) for s, n in zip(scores, mask.sum(axis=1), strict=True)]
