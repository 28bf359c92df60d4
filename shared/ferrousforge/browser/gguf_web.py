"""GGUF text generation in the browser: llama.cpp compiled to WebAssembly (``@wllama/wllama``),
driven from Python.

The model's bytes come verified from the blob cache; wllama loads them in its worker with an explicit
thread count (its default is half the cores) and CPU only. A completion streams its pieces straight
to the page's ``onToken`` (``web/wllama.mjs``), so Python is not in the per-token path; Python maps
Ollama's options in and wllama's timings out as Ollama's stats. Output is held to whole UTF-8
characters by a grammar: wllama's JSON encoding would throw on a byte token otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import js

from ferrousforge.browser.bridge import aborted, absent, helpers, jsobj
from ferrousforge.errors import Aborted, ForgeError, NotSupported
from ferrousforge.generation import (
    GenerationChunk,
    GenerationInput,
    GenerationResult,
    GenerationStats,
    TextGenerationMold,
)
from ferrousforge.mold import ModelSpec
from ferrousforge.options import Options

MAX_BROWSER_CTX = 4096  # a larger window costs KV memory in the tab for prompts it rarely sees


def completion_params(options: Options, prompt: str, n_ctx: int) -> dict[str, Any]:
    """Ollama's options as llama.cpp server completion parameters."""
    params: dict[str, Any] = {
        "prompt": prompt,
        "n_predict": options.num_predict if options.num_predict >= 0 else n_ctx,
        "temperature": options.temperature,
        "top_k": options.top_k,
        "top_p": options.top_p,
        "min_p": options.min_p,
        "typical_p": options.typical_p,
        "repeat_penalty": options.repeat_penalty,
        "repeat_last_n": options.repeat_last_n,
        "presence_penalty": options.presence_penalty,
        "frequency_penalty": options.frequency_penalty,
        "cache_prompt": True,
    }
    if options.stop:
        params["stop"] = list(options.stop)
    if options.seed >= 0:
        params["seed"] = options.seed
    return params


def stats_from(timings: Any, usage: Any) -> GenerationStats:
    """wllama's timings (ms) and usage as Ollama's counts and durations (ns)."""
    t = {} if absent(timings) else timings.to_py()
    u = {} if absent(usage) else usage.to_py()
    return GenerationStats(
        # the whole prompt, as the host counts it: evaluated now plus reused from the KV cache
        prompt_eval_count=int(t.get("prompt_n") or 0) + int(t.get("cache_n") or 0)
        or int(u.get("prompt_tokens") or 0),
        prompt_eval_duration=int(float(t.get("prompt_ms") or 0) * 1e6),
        eval_count=int(t.get("predicted_n") or u.get("completion_tokens") or 0),
        eval_duration=int(float(t.get("predicted_ms") or 0) * 1e6),
    )


class WebGenerateMold(TextGenerationMold):
    engine = "wllama"
    formats = ("gguf",)
    web_files = ("model",)

    def __init__(self, spec: ModelSpec, options: Options, accelerator: str, files: dict[str, Any]) -> None:
        super().__init__(spec, options)
        self.accelerator = accelerator
        self.files = files  # "model": Uint8Array
        self.threads = max(1, options.num_thread or 1)
        self.n_ctx = min(options.num_ctx, MAX_BROWSER_CTX)
        self.wllama: Any = None
        self.load_ms = 0.0
        self.running = 0  # completions under way: an unload waits for them (configure's new threads)
        self.idle = asyncio.Event()
        self.idle.set()
        self.turn = asyncio.Lock()  # one wllama completion at a time: two at once never end

    def load_sync(self) -> None:
        raise NotSupported("browser Molds load asynchronously")

    def unload_sync(self) -> None:
        raise NotSupported("browser Molds unload asynchronously")

    def stream_sync(self, request: GenerationInput) -> Iterator[GenerationChunk]:
        raise NotSupported("use generate()")

    def count_tokens(self, text: str) -> int:
        raise NotSupported("wllama 3.8 has no tokenizer call")

    async def load(self) -> None:
        forge_js = helpers()
        start = js.performance.now()
        params = {"n_threads": self.threads, "n_ctx": self.n_ctx, "n_batch": 512}
        try:
            self.wllama = await forge_js.wllama.open(forge_js.runtimeURL, self.files["model"], jsobj(params))
        except Exception as exc:
            raise ForgeError(f"wllama could not load the model: {exc}") from exc
        self.load_ms = float(js.performance.now() - start)  # reported once, by the first request
        self.files = {}

    async def unload(self) -> None:
        await self.idle.wait()
        if self.wllama is not None:
            await self.wllama.exit()
            self.wllama = None

    def is_loaded(self) -> bool:
        return self.wllama is not None

    def metadata(self) -> dict[str, Any]:
        return {"engine": self.engine, "accelerator": self.accelerator, "threads": self.threads}

    async def generate(
        self, request: GenerationInput, on_token: Any = None, signal: Any = None
    ) -> GenerationResult:
        """``signal``: the page's AbortSignal; aborted, wllama cancels the completion (Aborted)."""
        if request.format or request.optional_call or request.context:
            raise NotSupported("format, tools and context run on the host")
        if request.options.num_predict == 0:  # nothing asked for, as the host answers it
            return GenerationResult("", "length", GenerationStats(), [])
        params = completion_params(request.options, request.prompt, self.n_ctx)
        self.running += 1
        self.idle.clear()
        try:
            async with self.turn:  # requests at once take turns, in arrival order
                if aborted(signal):
                    raise Aborted()
                out = await helpers().wllama.complete(self.wllama, jsobj(params), on_token, signal)
        except Aborted:
            raise
        except Exception as exc:
            if aborted(signal):
                raise Aborted() from exc
            raise ForgeError(f"wllama failed: {exc}") from exc
        finally:
            self.running -= 1
            if not self.running:
                self.idle.set()
        reason = "length" if str(out.finish) == "length" else "stop"
        stats = stats_from(out.timings, out.usage)
        stats.load_duration, self.load_ms = int(self.load_ms * 1e6), 0.0
        return GenerationResult(str(out.text), reason, stats, [])
