"""GGUF text generation on the page's GPU with FerrousForge's own WGSL kernels: the same decoder
(``ferrousforge.gpu.decoder``) and generation loop (``ferrousforge.gpu.generate``) as the host's wgpu
engine, on ``navigator.gpu``.

The weights come from the blob cache's verified GGUF and are dequantized on the GPU at load. Prompts
are tokenized by ``@huggingface/tokenizers`` with the ``tokenizer.json`` the host made from the GGUF's
vocabulary (equal to llama.cpp's tokenizer, tested) and ``tokens.json`` (BOS, end-of-generation and
control tokens, as llama.cpp reads them); each token's text is llama.cpp's (``ferrousforge.token_pieces``),
so the page streams what the host's engine streams. Sampling is ``ferrousforge.sampling``'s.
"""

from __future__ import annotations

import json
import random
from typing import Any

import js

from ferrousforge.browser.bridge import aborted, helpers, jsobj
from ferrousforge.browser.gguf_web import MAX_BROWSER_CTX
from ferrousforge.errors import Aborted, ForgeError, NotSupported
from ferrousforge.generation import GenerationChunk, GenerationInput, GenerationResult, TextGenerationMold
from ferrousforge.gguf import parse_tensors
from ferrousforge.gpu.decoder import Decoder
from ferrousforge.gpu.generate import Slots
from ferrousforge.gpu.webgpu import WebGpuDevice
from ferrousforge.mold import ModelSpec
from ferrousforge.options import Options
from ferrousforge.sampling import sample
from ferrousforge.token_pieces import pieces


class PageVocabulary:
    """The GGUF's tokenizer in the page: text to ids, ids to llama.cpp's pieces, end of generation."""

    def __init__(self, tokenizer: Any, doc: dict[str, Any], facts: dict[str, Any]) -> None:
        self.tokenizer = tokenizer
        self.pieces = pieces(doc, facts.get("control", ()))
        self.eog = frozenset(int(t) for t in facts.get("eog", ()))
        self.bos = int(facts.get("bos", -1))
        self.add_bos = bool(facts.get("add_bos")) and self.bos >= 0

    def tokenize(self, text: str) -> list[int]:
        ids = list(self.tokenizer.encode(text, jsobj({"add_special_tokens": False})).ids.to_py())
        return ([self.bos] if self.add_bos else []) + [int(i) for i in ids] or [max(self.bos, 0)]

    def piece(self, token: int) -> bytes:
        return self.pieces[token] if token < len(self.pieces) else b""

    def is_eog(self, token: int) -> bool:
        return token in self.eog


class GpuGenerateMold(TextGenerationMold):
    engine = "wgpu"
    formats = ("gguf",)
    web_files = ("model", "tokenizer.json", "tokens.json")

    def __init__(self, spec: ModelSpec, options: Options, accelerator: str, files: dict[str, Any]) -> None:
        super().__init__(spec, options)
        self.accelerator = accelerator
        self.files = files
        self.n_ctx = min(options.num_ctx, MAX_BROWSER_CTX)
        self.slots: Slots | None = None
        self.vocab: PageVocabulary | None = None
        self.load_ms = 0.0

    def load_sync(self) -> None:
        raise NotSupported("browser Molds load asynchronously")

    def unload_sync(self) -> None:
        raise NotSupported("browser Molds unload asynchronously")

    def stream_sync(self, request: GenerationInput) -> Any:
        raise NotSupported("use generate()")

    def count_tokens(self, text: str) -> int:
        assert self.vocab is not None
        return len(self.vocab.tokenize(text))

    async def load(self) -> None:
        missing = [name for name in ("tokenizer.json", "tokens.json") if name not in self.files]
        if missing:
            raise ForgeError(f"the host sent no {' or '.join(missing)} for this model")
        start = js.performance.now()
        tokenizers = await helpers().loadTokenizers()
        text = self.files["tokenizer.json"]
        tokenizer = tokenizers.Tokenizer.new(js.JSON.parse(text), js.Object.new())
        self.vocab = PageVocabulary(tokenizer, json.loads(text), json.loads(self.files["tokens.json"]))
        data = memoryview(self.files["model"].to_bytes())
        self.files = {}
        meta, tensors = parse_tensors(data, len(data))
        trained = int(meta.get(f"{meta.get('general.architecture')}.context_length") or self.n_ctx)
        self.n_ctx = min(self.n_ctx, trained)
        device = await WebGpuDevice.open()
        self.slots = Slots(
            Decoder(device, data, meta, tensors, self.n_ctx, max(1, self.options.num_parallel))
        )
        self.load_ms = float(js.performance.now() - start)  # reported once, by the first request

    async def unload(self) -> None:
        self.slots = None
        self.vocab = None

    def is_loaded(self) -> bool:
        return self.slots is not None

    def metadata(self) -> dict[str, Any]:
        adapter = self.slots.decoder.device.name if self.slots else ""
        return {"engine": self.engine, "accelerator": self.accelerator, "adapter": adapter}

    async def generate(
        self, request: GenerationInput, on_token: Any = None, signal: Any = None
    ) -> GenerationResult:
        """``signal``: the page's AbortSignal, looked at between tokens (Aborted)."""
        if request.format or request.optional_call or request.context or request.suffix:
            raise NotSupported("format, tools, context and suffix run on the host")
        if request.logprobs:
            raise NotSupported("logprobs run on the host")
        assert self.slots is not None and self.vocab is not None
        opts = request.options
        prompt = self.vocab.tokenize(request.prompt)
        if len(prompt) >= self.n_ctx:  # the host fits long prompts (truncate, num_keep)
            raise ForgeError(
                f"a prompt of {len(prompt)} tokens does not fit the page's window of {self.n_ctx}"
            )
        rng = random.Random(None if opts.seed < 0 else opts.seed)

        def pick(values: list[float], ids: list[int] | None, history: list[int]) -> int:
            return sample(values, opts, history, rng, ids)

        parts: list[str] = []
        last = GenerationChunk("")
        chunks = self.slots.generate(prompt, opts, self.vocab, pick, request.shift)
        try:
            async for chunk in chunks:
                if aborted(signal):
                    raise Aborted()
                if chunk.text:
                    parts.append(chunk.text)
                    if on_token is not None:
                        on_token(chunk.text)
                last = chunk
        finally:
            await chunks.aclose()  # the slot's cache stays consistent with what was fed
        assert last.stats is not None
        last.stats.load_duration, self.load_ms = int(self.load_ms * 1e6), 0.0
        return GenerationResult("".join(parts), last.done_reason or "stop", last.stats, last.context or [])
