"""Embedding and rerank models on the page's GPU with FerrousForge's own WGSL kernels: the same
``BertEncoder`` and kernel sources the host's wgpu engine runs, on ``navigator.gpu``.

Tokenizes as the onnxruntime-web engine does (``@huggingface/tokenizers``); the ONNX blob's weights
are read by ``ferrousforge.gpu.onnx_weights`` and uploaded once; pooling (and for embedding models
the L2 normalisation) happens on the GPU, so a batch costs one submit and one small read.
"""

from __future__ import annotations

import struct
from typing import Any

import js

from ferrousforge.browser.bridge import helpers, jsobj
from ferrousforge.browser.onnx_web import WebEmbeddingMold, WebRerankMold
from ferrousforge.embedding import Embedded, EmbedItem, Scored, ScoreItem, relevance
from ferrousforge.gpu import onnx_weights
from ferrousforge.gpu.bert import BertEncoder, BertShape, bert_weights
from ferrousforge.gpu.webgpu import WebGpuDevice


class GpuModel:
    """Tokenizer and encoder, loaded from the blob cache's verified bytes."""

    def __init__(self) -> None:
        self.tokenizer: Any = None
        self.encoder: BertEncoder | None = None
        self.max_length = 512

    async def open(self, model: Any, tokenizer_json: str, config: dict[str, Any], normalize: bool) -> None:
        tokenizers = await helpers().loadTokenizers()
        self.tokenizer = tokenizers.Tokenizer.new(js.JSON.parse(tokenizer_json), js.Object.new())
        self.max_length = int(config.get("max_length") or 512)
        data = memoryview(model.to_bytes())
        weights, heads, eps = bert_weights(onnx_weights.read(data), data)
        shape = BertShape.from_weights({k: v[1] for k, v in weights.items()}, heads, eps)
        device = await WebGpuDevice.open()
        pooling = str(config.get("pooling", "mean"))
        self.encoder = BertEncoder(device, weights, shape, pooling, normalize=normalize, half=True)

    def encode(self, text: str, pair: str | None = None) -> tuple[list[int], list[int]]:
        options = jsobj({"return_token_type_ids": True, **({"text_pair": pair} if pair is not None else {})})
        enc = self.tokenizer.encode(text, options)
        ids, types = list(enc.ids.to_py()), list(enc.token_type_ids.to_py())
        if len(ids) > self.max_length:  # keep the final special token, as the wasm engine cuts
            ids = [*ids[: self.max_length - 1], ids[-1]]
            types = [*types[: self.max_length - 1], types[-1]]
        return ids, types

    async def run(self, rows: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        assert self.encoder is not None
        data, width = await self.encoder.run([r[0] for r in rows], [r[1] for r in rows])
        values = struct.unpack(f"<{len(data) // 4}f", data)
        return [list(values[i * width : (i + 1) * width]) for i in range(len(rows))]


class GpuMoldBase:
    """The browser ONNX Molds' lifecycle, with this engine in place of onnxruntime-web."""

    engine = "wgpu"
    spec: Any
    files: dict[str, Any]
    normalize_on_gpu = False

    async def load(self) -> None:
        self.gpu = GpuModel()
        await self.gpu.open(
            self.files["model"], self.files["tokenizer.json"], self.spec.config, self.normalize_on_gpu
        )
        self.files = {}

    async def unload(self) -> None:
        self.gpu = GpuModel()

    def is_loaded(self) -> bool:
        return getattr(self, "gpu", None) is not None and self.gpu.encoder is not None

    def length(self, text: str) -> tuple[int, int]:
        """A text's tokens, and the most the model takes."""
        return int(self.gpu.tokenizer.encode(text).ids.length), self.gpu.max_length

    def metadata(self) -> dict[str, Any]:
        encoder = self.gpu.encoder if self.is_loaded() else None
        adapter = encoder.device.name if encoder else ""
        return {"engine": self.engine, "accelerator": "browser-webgpu", "adapter": adapter}


class GpuEmbeddingMold(GpuMoldBase, WebEmbeddingMold):
    async def load(self) -> None:
        self.normalize_on_gpu = bool(self.spec.config.get("normalize", False))
        await GpuMoldBase.load(self)

    async def _embed_batch(self, items: list[EmbedItem]) -> list[Embedded]:
        rows = [
            self.gpu.encode(item.text)
            if isinstance(item.text, str)
            else (list(item.text), [0] * len(item.text))
            for item in items
        ]
        vectors = await self.gpu.run(rows)
        return [Embedded(v, len(r[0])) for v, r in zip(vectors, rows, strict=True)]


class GpuRerankMold(GpuMoldBase, WebRerankMold):
    async def _score_batch(self, items: list[ScoreItem]) -> list[Scored]:
        rows = [self.gpu.encode(item.query, item.document) for item in items]
        logits = await self.gpu.run(rows)
        return [Scored(relevance(x), len(r[0])) for x, r in zip(logits, rows, strict=True)]
