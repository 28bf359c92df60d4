"""onnxruntime-web engine for embedding and rerank models, driven from Python.

Tokenizes with transformers.js's tokenizer library (``@huggingface/tokenizers``, from the model's
tokenizer.json), runs an ``ort.InferenceSession`` on the ``wasm`` (SIMD + threads) or ``webgpu``
execution provider, and pools in JS (``web/kernels.mjs``): Python orchestrates, JS touches the
numbers. Concurrent requests share engine calls through the shared ``DynamicBatcher``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import js

from ferrousforge.batching import DynamicBatcher
from ferrousforge.browser.bridge import helpers, jsobj
from ferrousforge.embedding import (
    Embedded,
    EmbeddingMold,
    EmbedItem,
    RerankMold,
    Scored,
    ScoreItem,
    check_length,
)
from ferrousforge.errors import ForgeError, NotSupported
from ferrousforge.mold import ModelSpec
from ferrousforge.options import Options
from ferrousforge.placement import BROWSER_WEBGPU


class WebOnnx:
    """Session + tokenizer, loaded from bytes already fetched (and verified) by the blob cache."""

    def __init__(self, accelerator: str, threads: int) -> None:
        self.ep = "webgpu" if accelerator == BROWSER_WEBGPU else "wasm"
        self.threads = threads
        self.session: Any = None
        self.ort: Any = None
        self.tokenizer: Any = None
        self.input_names: list[str] = []

    async def open(self, model: Any, tokenizer_json: str, max_length: int) -> None:
        forge_js = helpers()
        self.ort = await forge_js.loadOrt(self.ep, self.threads)
        tokenizers = await forge_js.loadTokenizers()
        self.tokenizer = tokenizers.Tokenizer.new(js.JSON.parse(tokenizer_json), js.Object.new())
        options = {"executionProviders": [self.ep], "graphOptimizationLevel": "all"}
        self.session = await self.ort.InferenceSession.create(model, jsobj(options))
        self.input_names = [str(n) for n in self.session.inputNames]
        self.max_length = max_length

    async def run(self, encodings: list[Any]) -> tuple[Any, Any]:
        packed = helpers().kernels.pack(self.ort, jsobj(encodings), self.max_length, jsobj(self.input_names))
        try:
            outputs = await self.session.run(packed.feeds)
        except Exception as exc:
            raise ForgeError(f"onnxruntime-web ({self.ep}) failed: {exc}") from exc
        return getattr(outputs, str(self.session.outputNames[0])), packed

    async def close(self) -> None:
        if self.session is not None:
            await self.session.release()
            self.session = None


class WebMoldBase:
    """Lifecycle shared by both browser ONNX Molds: async, no worker threads (there are none here)."""

    spec: ModelSpec
    options: Options
    engine = "onnxruntime-web"
    formats: ClassVar[tuple[str, ...]] = ("onnx",)
    max_batch: ClassVar[int]  # from BatchedMold

    def __init__(self, spec: ModelSpec, options: Options, accelerator: str, files: dict[str, Any]) -> None:
        super().__init__(spec, options)  # type: ignore[call-arg]
        self.accelerator = accelerator
        self.files = files  # "model": Uint8Array, "tokenizer.json": str
        self.onnx = WebOnnx(accelerator, options.num_thread or 1)
        self.batcher: DynamicBatcher[Any, Any] | None = None

    def load_sync(self) -> None:
        raise NotSupported("browser Molds load asynchronously")

    def unload_sync(self) -> None:
        raise NotSupported("browser Molds unload asynchronously")

    async def load(self) -> None:
        max_length = int(self.spec.config.get("max_length") or 512)
        await self.onnx.open(self.files["model"], self.files["tokenizer.json"], max_length)
        self.files = {}

    async def unload(self) -> None:
        await self.onnx.close()

    def is_loaded(self) -> bool:
        return self.onnx.session is not None

    def metadata(self) -> dict[str, Any]:
        return {"engine": self.engine, "accelerator": self.accelerator, "threads": self.onnx.threads}

    def length(self, text: str) -> tuple[int, int]:
        """A text's tokens, and the most the model takes."""
        return int(self.onnx.tokenizer.encode(text).ids.length), self.onnx.max_length

    async def submit(self, run: Callable[[list[Any]], Awaitable[list[Any]]], items: list[Any]) -> list[Any]:
        """Concurrent requests share engine calls: the shared DynamicBatcher, on the page's event loop."""
        if self.batcher is None:
            self.batcher = DynamicBatcher(run, self.max_batch)
        return await self.batcher.submit(items)


class WebEmbeddingMold(WebMoldBase, EmbeddingMold):
    def embed_sync(self, items: list[EmbedItem]) -> list[Embedded]:
        raise NotSupported("use embed()")

    async def embed(self, items: list[EmbedItem]) -> list[Embedded]:
        for item in items:  # truncate: false and too long is the host's 400, before any work
            if not item.truncate and isinstance(item.text, str):
                check_length(*self.length(item.text), item.truncate)
        result: list[Embedded] = await self.submit(self._embed_batch, items)
        return result

    async def _embed_batch(self, items: list[EmbedItem]) -> list[Embedded]:
        encodings = []
        for item in items:
            if not isinstance(item.text, str):
                encodings.append({"ids": list(item.text)})
            else:
                encodings.append(
                    self.onnx.tokenizer.encode(item.text, jsobj({"return_token_type_ids": True}))
                )
        hidden, packed = await self.onnx.run(encodings)
        pooling = str(self.spec.config.get("pooling", "mean"))
        normalize = bool(self.spec.config.get("normalize", False))
        vectors = helpers().kernels.pool(hidden, packed.mask, packed.width, pooling, normalize)
        tokens = packed.tokens.to_py()
        return [Embedded(vectors[i], int(tokens[i])) for i in range(len(items))]


class WebRerankMold(WebMoldBase, RerankMold):
    """A cross-encoder: one relevance logit (or two classes) per query/document pair."""

    def score_sync(self, items: list[ScoreItem]) -> list[Scored]:
        raise NotSupported("use score()")

    async def score(self, items: list[ScoreItem]) -> list[Scored]:
        result: list[Scored] = await self.submit(self._score_batch, items)
        return result

    async def _score_batch(self, items: list[ScoreItem]) -> list[Scored]:
        options = jsobj({"return_token_type_ids": True})
        encodings = []
        for item in items:
            options.text_pair = item.document
            encodings.append(self.onnx.tokenizer.encode(item.query, options))
        logits, packed = await self.onnx.run(encodings)
        scores = helpers().kernels.relevance(logits).to_py()
        tokens = packed.tokens.to_py()
        return [Scored(float(s), int(n)) for s, n in zip(scores, tokens, strict=True)]
