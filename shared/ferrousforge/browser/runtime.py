"""The browser runtime's front door: ``forge.generate``, ``forge.chat``, ``forge.embed``,
``forge.rerank``, ``forge.capabilities``.

Each request is placed (``ferrousforge.placement``): in the browser on the best accelerator that fits
and is fast enough, else on the host. A local failure (load error, out of memory, device lost,
unsupported op) is retried on the host transparently. Every answer says where it ran, how long it
took, and why it ran there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import traceback
from dataclasses import dataclass, field, replace
from typing import Any

import js
from pyodide.ffi import JsProxy, create_proxy
from pyodide.http import pyfetch

from ferrousforge.browser.blobs import BlobCache
from ferrousforge.browser.bridge import aborted, absent, helpers, jsobj, now_ms, py
from ferrousforge.browser.gguf_gpu_web import GpuGenerateMold
from ferrousforge.browser.gguf_web import WebGenerateMold
from ferrousforge.browser.gpu_web import GpuEmbeddingMold, GpuRerankMold
from ferrousforge.browser.onnx_web import WebEmbeddingMold, WebRerankMold
from ferrousforge.browser.piper_web import WebPiperMold
from ferrousforge.browser.probe import measure, wasm_threads
from ferrousforge.browser.whisper_web import WebWhisperMold
from ferrousforge.chat_format import PLAIN_TEMPLATE, generate_messages, prefill_of, render, with_system
from ferrousforge.embedding import EmbedItem, ScoreItem, check_dimensions
from ferrousforge.errors import Aborted, BadRequest, ForgeError
from ferrousforge.generation import GenerationInput
from ferrousforge.gguf import special_tokens
from ferrousforge.mold import ModelSpec, Mold
from ferrousforge.names import ModelName
from ferrousforge.options import Options
from ferrousforge.placement import (
    BROWSER_WASM,
    BROWSER_WEBGPU,
    HOST,
    OVERRIDES,
    PREFERENCES,
    Capabilities,
    Decision,
    Requirements,
    decide,
    may_run,
    why_not,
)
from ferrousforge.protocol.embed import EmbedRequest, RerankRequest, rerank_body, rerank_results
from ferrousforge.protocol.generate import ChatRequest, GenerateRequest
from ferrousforge.speech import (
    MAX_SPEECH_CHARS,
    SAMPLE_RATE,
    WHISPER_LANGUAGE_NAMES,
    SpeechInput,
    language_code,
    resolve_voice,
)


def unit(vector: list[float]) -> list[float]:
    """The vector scaled to length 1, as the host's /api/embed answers (Ollama's)."""
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


class HostError(ForgeError):
    """The host answered with an error: its message and status, as the host gave them."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class HostNotFound(HostError):
    """The host's 404 (the page's JS reads a status from the class's name: ``forge.mjs``)."""


class HostUnavailable(HostError):
    """The host's 503."""


def host_error(message: str, status: int) -> HostError:
    cls = {404: HostNotFound, 503: HostUnavailable}.get(status, HostError)
    return cls(message, status)


@dataclass
class ModelInfo:
    name: str
    kind: str
    format: str
    files: dict[str, dict[str, Any]]
    config: dict[str, Any]
    requirements: Requirements
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)  # the model's MESSAGEs


class BrowserForge:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.base = str(settings.get("host") or js.location.origin).rstrip("/")
        self.runtime_url = str(settings["runtime_url"])
        self.probe_info = dict(settings["probe"])
        self.api_key = str(settings.get("api_key") or "")
        self.prefer = "browser"
        self.budget_bytes = 0
        self.threads = 0  # wasm threads for generation (0: as many as the page may use)
        self.unloading: set[asyncio.Future[None]] = set()
        self.caps: Capabilities | None = None
        self.infos: dict[str, ModelInfo] = {}
        self.molds: dict[tuple[str, str], Mold] = {}
        self.broken: dict[tuple[str, str], str] = {}  # (model, accelerator) → why it failed to load
        self.speeds: dict[tuple[str, str], float] = {}  # (model, placement) → items/s, measured
        self.races: dict[str, asyncio.Future[dict[str, tuple[float, str]]]] = {}  # see race()
        self.cache = BlobCache(self.base, self.headers())
        self.configure(settings)

    # -- settings and facts ---------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def configure(self, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        settings = py(settings) if settings is not None and not absent(settings) else {}
        if not isinstance(settings, dict):
            raise BadRequest("configure takes an object: {prefer, api_key, budget_bytes, threads}")
        for name in ("threads", "budget_bytes"):
            value = settings.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise BadRequest(f"{name} must be a whole number, 0 or more")
        if "prefer" in settings:
            if settings["prefer"] not in PREFERENCES:
                raise BadRequest(f"prefer must be one of {', '.join(PREFERENCES)}")
            self.prefer = settings["prefer"]
        if "api_key" in settings:
            self.api_key = str(settings["api_key"] or "")
            self.cache.headers = self.headers()
        if "threads" in settings and max(0, int(settings["threads"] or 0)) != self.threads:
            self.threads = max(0, int(settings["threads"] or 0))
            for key in [k for k, m in self.molds.items() if isinstance(m, WebGenerateMold)]:
                unloading = asyncio.ensure_future(self.molds.pop(key).unload())  # reloads with the new count
                self.unloading.add(unloading)
                unloading.add_done_callback(self.unloading.discard)
        if "budget_bytes" in settings:
            self.budget_bytes = int(settings["budget_bytes"] or 0)
            if self.caps is not None:
                self.caps.budget_bytes = self.budget_bytes
        return {
            "prefer": self.prefer,
            "api_key": bool(self.api_key),
            "budget_bytes": self.budget_bytes,
            "threads": self.threads,
        }

    async def start(self) -> None:
        await self.capabilities()

    async def capabilities(self, refresh: bool = False) -> dict[str, Any]:
        if self.caps is None or refresh:
            self.caps = await measure(self.runtime_url, self.probe_info, refresh)
            self.caps.budget_bytes = self.budget_bytes
        return self.caps.to_json()

    async def host_json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await pyfetch(
            self.base + path,
            method="POST",
            headers={"Content-Type": "application/json", **self.headers()},
            body=json.dumps(body),
        )
        data: dict[str, Any] = await response.json()
        if not response.ok:
            raise host_error(str(data.get("error", f"HTTP {response.status}")), response.status)
        return data

    async def info(self, model: str) -> ModelInfo:
        if model not in self.infos:
            raw = await self.host_json("/api/browser/model", {"model": model})
            self.infos[model] = ModelInfo(
                raw["model"],
                raw["kind"],
                raw["format"],
                raw["files"],
                raw["config"],
                Requirements.from_json(raw["requirements"]),
                raw.get("template"),
                raw.get("system"),
                raw.get("parameters") or {},
                raw.get("messages") or [],
            )
        return self.infos[model]

    async def place(self, model: str, override: str) -> tuple[ModelInfo | None, Decision]:
        if override == "host":
            return None, Decision(HOST, "host placement requested")
        if override == "auto" and self.prefer == "host":
            return None, Decision(HOST, "the page prefers the host (configure)")
        info = await self.info(model)
        if info.format not in WEB_ENGINES:
            return info, Decision(HOST, f"no in-browser engine for {info.format} models")
        if any(key.startswith("adapter.") for key in info.files):
            return info, Decision(HOST, "LoRA adapters are applied on the host")
        await self.capabilities()
        assert self.caps is not None
        measured = {p: s for (m, p), s in self.speeds.items() if m == info.name}
        allowed = [
            a for a in self.caps.accelerators if may_run(info.format, info.kind, info.files, a, override)
        ]
        caps = replace(self.caps, accelerators=allowed)
        decision = decide(caps, info.requirements, self.prefer, override, measured)
        if override in ("auto", "browser") and hasattr(WEB_ENGINES[info.format][info.kind], "measure"):
            decision = await self.race(info, caps, override, decision)
        usable = [c for c in decision.candidates if (info.name, c) not in self.broken]
        if decision.placement != HOST and not usable:
            return info, Decision(HOST, "; ".join(self.broken[(info.name, c)] for c in decision.candidates))
        decision.candidates = usable
        return info, decision

    async def mold(self, info: ModelInfo, accelerator: str) -> Mold:
        key = (info.name, accelerator)
        if key in self.molds:
            return self.molds[key]
        cls = WEB_ENGINES[info.format][info.kind]
        if accelerator == BROWSER_WEBGPU:
            cls = GPU_ENGINES.get((info.format, info.kind), cls)
        wanted = getattr(cls, "web_files", None)  # a Mold that needs only some of the model's files
        files: dict[str, Any] = {}
        for name, meta in info.files.items():
            if wanted is not None and name not in wanted:
                continue
            data = await self.cache.get(meta["url"], meta["digest"])
            files[name] = js.TextDecoder.new().decode(data) if name.endswith((".json", ".txt")) else data
        spec = ModelSpec(
            name=info.name, format=info.format, path=info.files["model"]["url"], config=info.config
        )
        threads = wasm_threads() if accelerator == BROWSER_WASM else 1
        if info.kind == "generate" and self.threads:
            threads = min(self.threads, threads)
        mold = cls(spec, Options(num_thread=threads), accelerator, files)
        await mold.load()
        self.molds[key] = mold
        return mold

    async def race(self, info: ModelInfo, caps: Capabilities, override: str, decision: Decision) -> Decision:
        """A Mold that can time itself (``measure``): where more than one in-browser accelerator could
        hold the model, time the same work on each once, wasm first, and keep the fastest. A later side
        taking over twice as long as the first (at least RACE_LIMIT_MS) is abandoned as the slower. The
        speeds are remembered for the page (``self.races``, and ``self.speeds`` until real requests
        are timed) and named in the reason."""
        fits = replace(info.requirements, min_items_per_s=0.0)  # the speed is measured, not estimated
        sides = [a.name for a in caps.ranked() if not why_not(a, caps, fits)]
        sides = [s for s in sides if (info.name, s) not in self.broken]
        sides.sort(key=lambda s: s != BROWSER_WASM)  # wasm first: its time bounds the others'
        if len(sides) < 2:
            return decision
        if info.name not in self.races:
            self.races[info.name] = asyncio.ensure_future(self._race(info, sides))
        results = await self.races[info.name]
        reason = "measured " + ", ".join(results[s][1] for s in results)
        ranked = sorted((s for s in sides if results.get(s, (0.0,))[0] > 0), key=lambda s: -results[s][0])
        if not ranked:
            return Decision(HOST, reason)
        best, speed = ranked[0], results[ranked[0]][0]
        host = self.speeds.get((info.name, HOST), 0.0)
        if self.prefer == "fastest" and host > speed:
            return Decision(HOST, f"host measured faster ({host:.1f}/s); {reason}", host)
        if override == "auto" and speed < info.requirements.min_items_per_s:
            return Decision(HOST, f"{reason}: under the {info.requirements.min_items_per_s:g}/s it needs")
        return Decision(best, f"{reason}: {best} is the fastest", speed, ranked)

    async def _race(self, info: ModelInfo, sides: list[str]) -> dict[str, tuple[float, str]]:
        """Each side's measured items/s (0: abandoned or failed) and what to say of it."""
        results: dict[str, tuple[float, str]] = {}
        first_ms = 0.0  # how long the first side's measurement took (0: it failed)
        for i, side in enumerate(sides):
            limit = RACE_FIRST_MS if i == 0 else max(RACE_LIMIT_MS, 2 * first_ms)
            try:
                mold: Any = await self.mold(info, side)
                start = now_ms()
                speed = await mold.measure(limit)
            except Exception as exc:
                self.broken[(info.name, side)] = f"{side} failed: {exc}"
                await self.drop(info.name, side)
                results[side] = (0.0, f"{side} failed: {exc}"[:300])
                continue
            if speed is None:  # the slower: not kept loaded
                results[side] = (0.0, f"{side} abandoned after {limit / 1000:.1f} s (slower)")
                await self.drop(info.name, side)
                continue
            results[side] = (speed, f"{side} {speed:.1f}/s")
            self.speeds.setdefault((info.name, side), speed)
            first_ms = first_ms or now_ms() - start
        return results

    async def drop(self, model: str, accelerator: str) -> None:
        """Forget a Mold that failed (unloaded, if it can be)."""
        stale = self.molds.pop((model, accelerator), None)
        if stale is not None:
            with contextlib.suppress(Exception):
                await stale.unload()

    def record(self, model: str, placement: str, items: int, ms: float) -> None:
        speed = items / max(ms / 1000, 1e-6)
        old = self.speeds.get((model, placement))
        self.speeds[(model, placement)] = speed if old is None else 0.7 * old + 0.3 * speed

    # -- requests -------------------------------------------------------------------------
    async def run(
        self, model: str, override: str, local: Any, remote: Any, items: Any, task: str
    ) -> dict[str, Any]:
        """Place, run locally (falling back to the host on failure) or on the host; time it.
        ``items``: how many items the request is (a count, or a function of the result); ``task``:
        what is asked (TASKS: the model kinds that do it), a 400 from a model of another kind."""
        start = now_ms()
        if override not in OVERRIDES:
            raise BadRequest(f"placement must be one of {', '.join(OVERRIDES)}")
        info, decision = await self.place(model, override)
        if info is not None and info.kind not in TASKS[task]:  # as the host answers, before any load
            raise BadRequest(f"model '{info.name}' does not support {task}")
        fallback = ""
        if decision.placement != HOST and info is not None:
            for accelerator in decision.candidates or [decision.placement]:
                try:
                    mold = await self.mold(info, accelerator)
                    result: dict[str, Any] = await local(mold)
                except ForgeError as exc:
                    if exc.status < 500:
                        raise
                    fallback = f"{accelerator} failed: {exc}"
                except Exception as exc:  # load error, OOM, device lost, unsupported op
                    fallback = f"{accelerator} failed: {exc}"
                    js.console.warn(
                        f"ferrousforge: {fallback}; retrying on the host\n{traceback.format_exc()}"
                    )
                else:
                    ms = now_ms() - start
                    self.record(info.name, accelerator, items(result) if callable(items) else items, ms)
                    return {**result, "placement": accelerator, "reason": decision.reason, "ms": ms}
                self.broken[(info.name, accelerator)] = fallback
                await self.drop(info.name, accelerator)
        result = await remote()
        ms = now_ms() - start
        self.record(info.name if info else model, HOST, items(result) if callable(items) else items, ms)
        out = {**result, "placement": HOST, "reason": decision.reason, "ms": ms}
        if fallback:
            out["fallback"] = fallback
        return out

    async def embed(self, request: Any) -> dict[str, Any]:
        body = py(request)
        override = str(body.pop("placement", "auto"))
        req = EmbedRequest.ollama(body)
        items = [EmbedItem(text, req.truncate) for text in req.inputs]

        async def local(mold: Any) -> dict[str, Any]:
            out = await mold.embed(items)
            if out and req.dimensions:  # as the host answers
                check_dimensions(req.dimensions, len(out[0].vector))
            return {
                "model": req.model.display,
                "embeddings": [unit(list(e.vector)[: req.dimensions or None]) for e in out],
                "prompt_eval_count": sum(e.tokens for e in out),
            }

        async def remote() -> dict[str, Any]:
            data = await self.host_json("/api/embed", body)
            return {
                "model": data["model"],
                "embeddings": data["embeddings"],
                "prompt_eval_count": data.get("prompt_eval_count", 0),
            }

        return await self.run(req.model.display, override, local, remote, max(len(items), 1), "embeddings")

    async def rerank(self, request: Any) -> dict[str, Any]:
        body = py(request)
        override = str(body.pop("placement", "auto"))
        req = RerankRequest.parse(body)

        async def local(mold: Any) -> dict[str, Any]:
            if isinstance(mold, WebRerankMold):
                scored = await mold.score([ScoreItem(req.query, d, req.truncate) for d in req.documents])
                scores = [s.score for s in scored]
            else:  # a bi-encoder: cosine of the query's embedding with each document's
                vectors = await mold.embed([EmbedItem(t, req.truncate) for t in [req.query, *req.documents]])
                cosine = helpers().kernels.cosine
                scores = [float(cosine(vectors[0].vector, v.vector)) for v in vectors[1:]]
            return {"model": req.model.display, "results": rerank_results(req, scores)}

        async def remote() -> dict[str, Any]:
            data = await self.host_json("/api/rerank", body)
            return {"model": data["model"], "results": data["results"]}

        return await self.run(req.model.display, override, local, remote, len(req.documents) + 1, "rerank")

    async def host_stream(
        self, path: str, body: dict[str, Any], on_chunk: Any, signal: Any = None
    ) -> dict[str, Any]:
        """POST a streaming request to the host; each NDJSON chunk to ``on_chunk``; the last one back.
        An aborted ``signal`` ends it (the host stops generating for a client that has gone)."""
        try:
            last = await helpers().streamLines(
                self.base + path, jsobj(self.headers()), jsobj(body), on_chunk, signal
            )
        except Exception as exc:
            if aborted(signal):
                raise Aborted() from exc
            raise
        out: dict[str, Any] = last.to_py() if not absent(last) else {}
        if "error" in out:
            raise host_error(str(out["error"]), int(out.get("status", 500)))
        return out

    async def _generation(
        self,
        body: dict[str, Any],
        on_token: Any,
        override: str,
        path: str,
        prompt_of: Any,
        field: str,
        needs_host: bool,
        signal: Any = None,
    ) -> dict[str, Any]:
        """One generate or chat request: placed, streamed to ``on_token``, answered in Ollama's shape.
        An aborted ``signal`` stops it wherever it runs (Aborted; never retried on the host)."""
        owned = None  # a Python function becomes a JS function that lives until the request ends
        if on_token is not None and not isinstance(on_token, JsProxy):
            on_token = owned = create_proxy(on_token)
        model = str(body["model"])
        if needs_host and override == "auto":
            override = "host"  # format, tools, context, images, logprobs: the host's engine only
        elif needs_host and override != "host":
            raise BadRequest(
                f"format, tools, context, suffix, images, logprobs and logit_bias run on the host's engine: "
                f"placement '{override}' can't honour them (use 'auto' or 'host')"
            )

        emitted: list[str] = []  # what the page streamed before a failure: the host goes on from there

        def streamed(piece: str) -> None:
            if aborted(signal):  # an engine may still be handing over what it had made
                return
            emitted.append(piece)
            if on_token is not None:
                on_token(piece)

        streamed_js = create_proxy(streamed)  # an engine in JS (wllama) calls it as tokens come

        async def local(mold: Any) -> dict[str, Any]:
            info = await self.info(model)
            options = Options.parse(body.get("options"), Options.parse(info.parameters or {}))
            started = now_ms()
            emitted.clear()
            result = await mold.generate(GenerationInput(prompt_of(info), options), streamed_js, signal)
            stats = result.stats
            return {
                "model": info.name,
                **self._shape(field, result.text),
                "done": True,
                "done_reason": result.done_reason,
                "total_duration": int((now_ms() - started) * 1e6),
                "load_duration": stats.load_duration,
                "prompt_eval_count": stats.prompt_eval_count,
                "prompt_eval_duration": stats.prompt_eval_duration,
                "eval_count": stats.eval_count,
                "eval_duration": stats.eval_duration,
            }

        async def remote() -> dict[str, Any]:
            if aborted(signal):
                raise Aborted()
            parts: list[str] = list(emitted)
            scored: list[Any] = []  # the host streams logprobs with each piece, as Ollama does
            request, where, piece_of = {**body, "stream": True}, path, field
            if emitted:  # a stream cut short in the page: the host continues the same text
                info = await self.info(model)
                options = dict(body.get("options") or {})
                if int(options.get("num_predict", -1)) >= 0:  # a piece is one token or more
                    options["num_predict"] = max(1, int(options["num_predict"]) - len(emitted))
                request = {
                    "model": model,
                    "prompt": prompt_of(info) + "".join(emitted),
                    "raw": True,
                    "stream": True,
                    "options": options,
                }
                where, piece_of = "/api/generate", "response"

            def chunk(line: Any) -> None:
                piece = line.response if piece_of == "response" else line.message.content
                if (logprobs := getattr(line, "logprobs", None)) is not None and not absent(logprobs):
                    scored.extend(py(logprobs))
                if piece and not aborted(signal):
                    parts.append(str(piece))
                    if on_token is not None:
                        on_token(piece)

            proxy = create_proxy(chunk)
            try:
                final = await self.host_stream(where, request, proxy, signal)
            finally:
                proxy.destroy()
            final.pop("created_at", None)
            final.pop("response", None)
            if scored:
                final["logprobs"] = scored
            if emitted:  # the tokens the page made before it failed count too
                final["eval_count"] = int(final.get("eval_count") or 0) + len(emitted)
            return {**final, **self._shape(field, "".join(parts))}

        def tokens(result: dict[str, Any]) -> int:
            return max(int(result.get("eval_count") or 0), 1)

        try:
            return await self.run(model, override, local, remote, tokens, "generate")
        finally:
            streamed_js.destroy()
            if owned is not None:
                owned.destroy()

    @staticmethod
    def _shape(field: str, text: str) -> dict[str, Any]:
        return (
            {"response": text} if field == "response" else {"message": {"role": "assistant", "content": text}}
        )

    @staticmethod
    def _controls(body: dict[str, Any]) -> tuple[Any, str, Any]:
        """Take the page's fields out of a request: its ``onToken`` callback, its placement and its
        AbortSignal."""
        on_token, signal = body.pop("onToken", None), body.pop("signal", None)
        placement = str(body.pop("placement", "auto"))
        return (None if absent(on_token) else on_token), placement, (None if absent(signal) else signal)

    async def generate(self, request: Any) -> dict[str, Any]:
        body = py(request)
        on_token, override, signal = self._controls(body)
        req = GenerateRequest.parse(body)
        body["model"] = req.model.display

        def prompt_of(info: ModelInfo) -> str:
            if req.raw:
                return req.prompt
            system = req.system if req.system is not None else info.system
            template = req.template or info.template or PLAIN_TEMPLATE
            messages = generate_messages(req.prompt, system, info.messages)
            return render(template, messages, **special_tokens(info.config))

        needs_host = bool(
            req.format or req.context or req.images or req.suffix or req.logprobs or req.logit_bias
        )
        return await self._generation(
            body, on_token, override, "/api/generate", prompt_of, "response", needs_host, signal
        )

    async def chat(self, request: Any) -> dict[str, Any]:
        body = py(request)
        on_token, override, signal = self._controls(body)
        req = ChatRequest.parse(body)
        body["model"] = req.model.display
        if not req.messages:
            raise BadRequest("'messages' must not be empty")

        def prompt_of(info: ModelInfo) -> str:
            messages = with_system([*info.messages, *(m.to_template() for m in req.messages)], info.system)
            return render(
                info.template or PLAIN_TEMPLATE,
                messages,
                prefill=prefill_of(messages),
                **special_tokens(info.config),
            )

        needs_host = bool(
            req.format or req.tools or req.logprobs or req.logit_bias or any(m.images for m in req.messages)
        )
        return await self._generation(
            body, on_token, override, "/api/chat", prompt_of, "message", needs_host, signal
        )

    async def transcribe(self, request: Any, samples: Any) -> dict[str, Any]:
        """``samples``: the page's audio as a JS Float32Array at 16 kHz (``web/whisper.mjs`` decoded it).
        In the browser: greedy, no timestamps, no VAD; the host is asked for the same (no VAD)."""
        body = py(request)
        override = str(body.pop("placement", "auto"))
        model = ModelName.parse(str(body.get("model") or "")).display
        language = language_code(str(body.get("language") or "")) or None  # "english" as well as "en"
        task = str(body.get("task") or "transcribe")
        seconds = int(samples.length) / SAMPLE_RATE
        if seconds <= 0:
            raise BadRequest("audio is empty")

        async def local(mold: Any) -> dict[str, Any]:
            t = await mold.transcribe_samples(samples, language, task)
            name = WHISPER_LANGUAGE_NAMES.get(t.language, t.language)  # "english", as the host answers
            return {"model": model, "text": t.text, "language": name, "duration": t.duration}

        async def remote() -> dict[str, Any]:
            fields = {"model": model, "response_format": "verbose_json", "vad_filter": "false"}
            if language:
                fields["language"] = language
            path = "/v1/audio/translations" if task == "translate" else "/v1/audio/transcriptions"
            answer = (
                await helpers().whisper.postTranscription(
                    self.base + path, jsobj(self.headers()), samples, jsobj(fields)
                )
            ).to_py()
            data = answer["body"]
            if int(answer["status"]) >= 400:
                error = data.get("error")
                message = error.get("message") if isinstance(error, dict) else error
                raise host_error(str(message or f"HTTP {answer['status']}"), int(answer["status"]))
            return {
                "model": model,
                "text": data["text"],
                "language": data.get("language"),
                "duration": data.get("duration"),
            }

        result = await self.run(model, override, local, remote, max(seconds, 0.01), "transcription")
        return {**result, "rtf": result["ms"] / 1000 / seconds}

    async def speak(self, request: Any, on_chunk: Any = None) -> dict[str, Any]:
        """Text → speech: ``audio`` a JS Float32Array at ``sample_rate``; each sentence (in the page) or
        piece of the host's stream goes to ``on_chunk(samples, sample_rate)`` as soon as it is made."""
        body = py(request)
        override = str(body.pop("placement", "auto"))
        model = ModelName.parse(str(body.get("model") or "")).display
        text = body.get("input")
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("'input' must be a non-empty string: there is nothing to say")
        if len(text) > MAX_SPEECH_CHARS:  # as the host refuses it (its default limit)
            raise BadRequest(f"'input' is {len(text)} characters, more than the limit of {MAX_SPEECH_CHARS}")
        speed = body.get("speed", 1.0)
        if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
            raise BadRequest("'speed' must be between 0.25 and 4.0")
        voice = str(body.get("voice") or "")
        owned = None
        if on_chunk is not None and not isinstance(on_chunk, JsProxy):
            on_chunk = owned = create_proxy(on_chunk)

        async def local(mold: Any) -> dict[str, Any]:
            out = await mold.synthesize_samples(SpeechInput(text, voice, float(speed)), on_chunk)
            if not int(out["audio"].length):  # punctuation alone, say: the host's 400 too
                raise BadRequest(f"'input' has no words to speak: {text[:40]!r}")
            return {"model": model, **out}

        async def remote() -> dict[str, Any]:
            fields = {"model": model, "input": text, "speed": speed, **({"voice": voice} if voice else {})}
            answer = await helpers().piper.fetchSpeech(
                self.base + "/v1/audio/speech", jsobj(self.headers()), jsobj(fields), on_chunk
            )
            if int(answer.status) >= 400:
                raise host_error(str(answer.error), int(answer.status))
            rate = int(answer.sample_rate)
            voices = list((await self.info(model)).config.get("voices") or [])
            said = resolve_voice(voice, voices, model) if voices else voice  # the voice the host spoke with
            return {"model": model, "audio": answer.audio, "sample_rate": rate, "voice": said}

        def seconds(result: dict[str, Any]) -> float:
            return max(int(result["audio"].length) / int(result["sample_rate"]), 0.01)

        try:
            result = await self.run(model, override, local, remote, seconds, "speech")
        finally:
            if owned is not None:
                owned.destroy()
        duration = int(result["audio"].length) / int(result["sample_rate"])
        return {**result, "duration": duration, "audio_per_s": duration / max(result["ms"] / 1000, 1e-6)}

    async def cache_usage(self) -> dict[str, Any]:
        return await self.cache.usage()

    async def clear_cache(self) -> dict[str, Any]:
        await self.cache.clear()
        return await self.cache.usage()


class BrowserClient:
    """The SDK's ``AsyncClient`` calls for Python running in the page: each request is placed, runs
    in the browser or on the host (through ``pyfetch``), and its answer says where it ran."""

    def __init__(self, forge: BrowserForge) -> None:
        self.forge = forge

    async def embed(self, model: str, input: str | list[str], **fields: Any) -> dict[str, Any]:
        return await self.forge.embed({"model": model, "input": input, **fields})

    async def embeddings(self, texts: list[str], model: str, placement: str = "auto") -> list[Any]:
        out: list[Any] = (await self.embed(model, texts, placement=placement))["embeddings"]
        return out

    async def rerank(
        self,
        query: str,
        documents: list[str],
        model: str,
        top_n: int | None = None,
        return_documents: bool = True,
        placement: str = "auto",
    ) -> list[dict[str, Any]]:
        body = {**rerank_body(query, documents, model, top_n, return_documents), "placement": placement}
        results: list[dict[str, Any]] = (await self.forge.rerank(body))["results"]
        return results

    async def generate(
        self, model: str, prompt: str = "", on_token: Any = None, **fields: Any
    ) -> dict[str, Any]:
        """``on_token``: a function called with each piece of text as it is generated."""
        return await self.forge.generate({"model": model, "prompt": prompt, "onToken": on_token, **fields})

    async def chat(
        self, model: str, messages: list[dict[str, Any]], on_token: Any = None, **fields: Any
    ) -> dict[str, Any]:
        return await self.forge.chat({"model": model, "messages": messages, "onToken": on_token, **fields})

    async def speak(self, model: str, input: str, on_chunk: Any = None, **fields: Any) -> dict[str, Any]:
        """``on_chunk(samples, sample_rate)``: each piece of audio as it is made; the answer's ``audio``
        is a JS Float32Array at ``sample_rate``."""
        return await self.forge.speak({"model": model, "input": input, **fields}, on_chunk)


_FORGE: BrowserForge | None = None


def client() -> BrowserClient:
    """The page's runtime as an SDK client (after ``forge.ready``)."""
    if _FORGE is None:
        raise ForgeError("the FerrousForge runtime has not started")
    return BrowserClient(_FORGE)


RACE_FIRST_MS = 120_000.0  # the first side's measurement (wasm): a bound, not expected
RACE_LIMIT_MS = 5_000.0  # a later side: abandoned past max(this, twice the first side's time)

# what a request asks → the kinds of model that do it (an embedding model reranks by cosine)
TASKS = {
    "embeddings": ("embed",),
    "rerank": ("rerank", "embed"),
    "generate": ("generate",),
    "transcription": ("transcription",),
    "speech": ("speech",),
}
WEB_ENGINES: dict[str, dict[str, type[Any]]] = {
    "onnx": {"embed": WebEmbeddingMold, "rerank": WebRerankMold, "speech": WebPiperMold},
    "gguf": {"generate": WebGenerateMold},
    "ctranslate2": {"transcription": WebWhisperMold},  # from the ONNX graphs written at pull time
}
# on browser-webgpu, FerrousForge's own kernels (ferrousforge.gpu) rather than onnxruntime-web's WebGPU EP
GPU_ENGINES: dict[tuple[str, str], type[Any]] = {
    ("onnx", "embed"): GpuEmbeddingMold,
    ("onnx", "rerank"): GpuRerankMold,
    ("gguf", "generate"): GpuGenerateMold,
}


async def start(settings: Any) -> BrowserForge:
    global _FORGE
    forge = BrowserForge(py(settings))
    await forge.start()
    _FORGE = forge
    return forge
