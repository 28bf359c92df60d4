"""Text generation for /api/generate and /api/chat: prompt building, scheduling, Ollama's chunks."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from ferrousforge.chat_format import PLAIN_TEMPLATE, generate_messages, render, with_system
from ferrousforge.errors import BadRequest, NotSupported
from ferrousforge.generation import GenerationInput, GenerationStats, TextGenerationMold
from ferrousforge.mold import Capability, ModelSpec, resolve_mold
from ferrousforge.names import ModelName
from ferrousforge.options import parse_keep_alive
from ferrousforge.protocol.generate import ChatRequest, Common, GenerateRequest
from ferrousforge.tools import as_plain_turns, call_schema, check_tools, choose, parse_call
from ferrousforge_host.http import Chunk, now_iso
from ferrousforge_host.scheduler import Scheduler


def capabilities(spec: ModelSpec) -> set[Capability]:
    caps = set(resolve_mold(spec).capabilities)
    if Capability.COMPLETION in caps:  # any chat model: see ferrousforge.tools
        caps.add(Capability.TOOLS)
    return caps


def template_knows_tools(spec: ModelSpec) -> bool:
    return bool(spec.template and "tools" in spec.template)


def _stats(stats: GenerationStats, load_ns: int, started: int) -> dict[str, int]:
    return {
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": load_ns,
        "prompt_eval_count": stats.prompt_eval_count,
        "prompt_eval_duration": stats.prompt_eval_duration,
        "eval_count": stats.eval_count,
        "eval_duration": stats.eval_duration,
    }


class GenerationService:
    def __init__(self, scheduler: Scheduler, default_keep_alive: float | None, metrics: Any = None) -> None:
        self.scheduler = scheduler
        self.default_keep_alive = default_keep_alive
        self.metrics = metrics

    def _prepare(self, req: Common, images: bool) -> tuple[ModelSpec, Any, float | None]:
        spec, _ = self.scheduler.spec(req.model)
        caps = capabilities(spec)
        if Capability.COMPLETION not in caps:
            raise NotSupported(f"model '{req.model}' does not support generate")
        if images and Capability.VISION not in caps:
            raise NotSupported(f"model '{req.model}' does not support images")
        options = self.scheduler.options(spec, req.options)
        return spec, options, parse_keep_alive(req.keep_alive, self.default_keep_alive)

    async def _load_or_unload(
        self, name: ModelName, options: Any, keep_alive: float | None, shape: dict[str, Any]
    ) -> AsyncIterator[Chunk]:
        """An empty request loads the model (or unloads it with keep_alive 0), as Ollama does."""
        if keep_alive == 0:
            await self.scheduler.unload(name)
            yield {
                "model": name.display,
                "created_at": now_iso(),
                **shape,
                "done": True,
                "done_reason": "unload",
            }
            return
        async with self.scheduler.use(name, options, keep_alive):
            pass
        yield {"model": name.display, "created_at": now_iso(), **shape, "done": True, "done_reason": "load"}

    async def _run(
        self,
        req: Common,
        options: Any,
        keep_alive: float | None,
        prompt: str,
        context: list[int],
        shape: Any,
        fmt: str | dict[str, Any] | None = None,
        tools: dict[str, dict[str, Any]] | None = None,
        call_required: bool = False,
    ) -> AsyncIterator[Chunk]:
        """Generate and yield Ollama's chunks. With tools offered, a reply that opens with "{" is held
        back until it ends, then answered as ``tool_calls`` when it is a call."""
        started = time.perf_counter_ns()
        name = req.model.display
        schema = call_schema(tools) if tools else None
        async with self.scheduler.use(req.model, options, keep_alive) as (runner, load_ns):
            mold = runner.mold
            assert isinstance(mold, TextGenerationMold)
            request = GenerationInput(
                prompt,
                options,
                context=context,
                format=schema if call_required else fmt,
                optional_call=None if call_required else schema,
            )
            maybe_call, held = bool(tools), ""
            async for chunk in mold.stream(request):
                text = chunk.text
                if maybe_call:
                    held += text
                    head = held.lstrip()
                    if head and not head.startswith("{"):  # prose: release what was held
                        maybe_call, text, held = False, held, ""
                    elif not chunk.done:
                        continue
                    else:
                        text = held
                if not chunk.done:
                    yield {"model": name, "created_at": now_iso(), **shape(text), "done": False}
                    continue
                call = parse_call(text, tools) if tools and maybe_call else None
                final: dict[str, Any] = {
                    "model": name,
                    "created_at": now_iso(),
                    **shape("" if call else text),
                    "done": True,
                    "done_reason": chunk.done_reason,
                }
                if call:
                    final["message"]["tool_calls"] = [{"function": call}]
                stats = chunk.stats or GenerationStats()
                final.update(_stats(stats, load_ns, started))
                final["accelerator"] = mold.metadata().get("accelerator", "cpu")
                if self.metrics is not None:
                    self.metrics.count_tokens(name, stats.prompt_eval_count, stats.eval_count)
                if isinstance(req, GenerateRequest) and not req.raw:
                    final["context"] = chunk.context or []
                yield final

    def generate(self, req: GenerateRequest) -> AsyncIterator[Chunk]:
        spec, options, keep_alive = self._prepare(req, bool(req.images))
        if not req.prompt and not req.context and not req.suffix:
            return self._load_or_unload(req.model, options, keep_alive, {"response": ""})
        if req.raw:
            prompt = req.prompt
        else:
            system = req.system if req.system is not None else spec.system
            prompt = render(
                req.template or spec.template or PLAIN_TEMPLATE,
                generate_messages(req.prompt, system),
                bos_token=spec.config.get("bos_token", ""),
                eos_token=spec.config.get("eos_token", ""),
            )
        return self._run(
            req, options, keep_alive, prompt, req.context, lambda text: {"response": text}, fmt=req.format
        )

    def chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        spec, options, keep_alive = self._prepare(req, any(m.images for m in req.messages))
        offered, required = choose(check_tools(req.tools), req.tool_choice)
        if offered and req.format:
            raise BadRequest("use either tools or format, not both")
        if not req.messages:
            return self._load_or_unload(
                req.model, options, keep_alive, {"message": {"role": "assistant", "content": ""}}
            )
        messages = with_system([m.to_template() for m in req.messages], spec.system)
        native = template_knows_tools(spec)
        prompt = render(
            spec.template or PLAIN_TEMPLATE,
            messages if native else as_plain_turns(messages, offered),
            bos_token=spec.config.get("bos_token", ""),
            eos_token=spec.config.get("eos_token", ""),
            tools=[{"type": "function", "function": fn} for fn in offered.values()]
            if native and offered
            else None,
        )
        return self._run(
            req,
            options,
            keep_alive,
            prompt,
            [],
            lambda text: {"message": {"role": "assistant", "content": text}},
            fmt=req.format,
            tools=offered or None,
            call_required=required,
        )


def merge_generate(chunks: list[Chunk]) -> Chunk:
    final = dict(chunks[-1])
    final["response"] = "".join(c.get("response", "") for c in chunks)
    return final


def merge_chat(chunks: list[Chunk]) -> Chunk:
    final = dict(chunks[-1])
    final["message"] = {**chunks[-1]["message"], "content": "".join(c["message"]["content"] for c in chunks)}
    return final
