"""Text generation for /api/generate and /api/chat: prompt building, scheduling, Ollama's chunks."""

from __future__ import annotations

import base64
import binascii
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ferrousforge.chat_format import (
    PLAIN_TEMPLATE,
    generate_messages,
    knows_tools,
    prefill_of,
    render,
    with_system,
)
from ferrousforge.errors import BadRequest, NotSupported
from ferrousforge.generation import (
    IMAGE_MARKER,
    MAX_TOKEN_CHARS,
    GenerationInput,
    GenerationStats,
    TextGenerationMold,
)
from ferrousforge.gguf import GGUFError, read_file_metadata, special_tokens
from ferrousforge.mold import Capability, ModelSpec, resolve_mold
from ferrousforge.names import ModelName
from ferrousforge.options import parse_keep_alive
from ferrousforge.protocol.generate import ChatRequest, Common, GenerateRequest
from ferrousforge.reply import THINK_OPEN, Parts, ReplyParser, call_markers, thinks
from ferrousforge.tools import as_plain_turns, call_schema, check_tools, choose
from ferrousforge_host.http import Chunk, now_iso
from ferrousforge_host.scheduler import Scheduler


def capabilities(spec: ModelSpec) -> set[Capability]:
    caps = set(resolve_mold(spec).capabilities)
    if Capability.COMPLETION in caps:  # any chat model: see ferrousforge.tools
        caps.add(Capability.TOOLS)
        if thinks(spec.template):
            caps.add(Capability.THINKING)
        if spec.format == "gguf" and has_fim_tokens(spec.path):
            caps.add(Capability.INSERT)
        if spec.format == "gguf" and "projector" in spec.files:
            caps.add(Capability.VISION)
    return caps


# A prompt's text, with an IMAGE_MARKER for each of its images, and the images
Prompt = tuple[str, list[bytes]]


def decode_images(images: list[str], where: str = "images") -> list[bytes]:
    """Base64 images (Ollama's ``images``) as bytes; a bad one is a 400 naming it."""
    out = []
    for i, text in enumerate(images):
        try:
            out.append(base64.b64decode("".join(text.split()), validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest(f"{where}[{i}] is not base64") from None
    return out


def with_images(content: str, count: int) -> str:
    """A message's text with a marker for each of its images before it, as LLaVA's prompts put them."""
    return f"{IMAGE_MARKER}\n" * count + content


@functools.lru_cache(maxsize=64)
def has_fim_tokens(path: str) -> bool:
    """Whether a GGUF names fill-in-the-middle tokens (what ``suffix`` needs)."""
    try:
        meta = read_file_metadata(path)
    except (GGUFError, OSError):
        return False
    return "tokenizer.ggml.fim_pre_token_id" in meta and "tokenizer.ggml.fim_suf_token_id" in meta


def _stats(stats: GenerationStats, load_ns: int, started: int) -> dict[str, int]:
    return {
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": load_ns,
        "prompt_eval_count": stats.prompt_eval_count,
        "prompt_eval_duration": stats.prompt_eval_duration,
        "eval_count": stats.eval_count,
        "eval_duration": stats.eval_duration,
    }


def needs(req: Common, images: bool) -> frozenset[str]:
    """What a request needs of an engine beyond plain text (``Mold.lacks`` names what one cannot give)."""
    wanted = {
        "format": bool(req.format or getattr(req, "tools", None)),
        "logprobs": bool(req.logprobs or getattr(req, "prompt_logprobs", False)),
        "logit_bias": bool(req.logit_bias),
        "images": images,
    }
    return frozenset(k for k, v in wanted.items() if v)


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
            raise NotSupported(
                f"model '{req.model}' does not support images: it lacks the 'vision' capability"
            )
        options = self.scheduler.options(spec, req.options, needs(req, images))
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
        prompt: Prompt | Callable[[TextGenerationMold], Awaitable[Prompt]],
        shape: Callable[[Parts], dict[str, Any]],
        parser: Callable[[str], ReplyParser],
        generation: dict[str, Any],
    ) -> AsyncIterator[Chunk]:
        """Generate and yield Ollama's chunks: the reply split by ``parser`` into thinking, content and
        tool calls (each call given out when complete). ``prompt`` may be built once the model is
        loaded (to fit a chat to its window)."""
        started = time.perf_counter_ns()
        name = req.model.display
        async with self.scheduler.use(req.model, options, keep_alive) as (runner, load_ns):
            mold = runner.mold
            assert isinstance(mold, TextGenerationMold)
            text, images = prompt if isinstance(prompt, tuple) else await prompt(mold)
            request = GenerationInput(
                text,
                options,
                truncate=req.truncate,
                shift=req.shift,
                logprobs=req.logprobs,
                top_logprobs=req.top_logprobs,
                prompt_logprobs=isinstance(req, GenerateRequest) and req.prompt_logprobs,
                logit_bias=req.logit_bias,
                images=images,
                **generation,
            )
            split = parser(text)
            async for chunk in mold.stream(request):
                parts = split.feed(chunk.text)
                if not chunk.done:
                    if parts or chunk.logprobs or chunk.prompt_logprobs:
                        out = {"model": name, "created_at": now_iso(), **shape(parts), "done": False}
                        if chunk.logprobs:
                            out["logprobs"] = chunk.logprobs
                        if chunk.prompt_logprobs:  # asked for by OpenAI's echo only
                            out["prompt_logprobs"] = chunk.prompt_logprobs
                        yield out
                    continue
                rest = split.finish()
                parts.thinking += rest.thinking
                parts.content += rest.content
                parts.calls += rest.calls
                final: dict[str, Any] = {
                    "model": name,
                    "created_at": now_iso(),
                    **shape(parts),
                    "done": True,
                    "done_reason": chunk.done_reason,
                }
                if chunk.logprobs:
                    final["logprobs"] = chunk.logprobs
                if chunk.stop_sequence:
                    final["stop_sequence"] = chunk.stop_sequence
                stats = chunk.stats or GenerationStats()
                final.update(_stats(stats, load_ns, started))
                final["accelerator"] = mold.metadata().get("accelerator", "cpu")
                if self.metrics is not None:
                    self.metrics.count_tokens(name, stats.prompt_eval_count, stats.eval_count)
                if isinstance(req, GenerateRequest) and not req.raw:
                    final["context"] = chunk.context or []
                yield final

    def _thinking(self, req: Common, spec: ModelSpec) -> tuple[bool, dict[str, Any]]:
        """Whether to think, and the template variables that say so, from ``think`` (true, false or
        "low" | "medium" | "high"). A model that can think does unless told not to."""
        capable = thinks(spec.template)
        if req.think not in (None, False) and not capable:
            raise BadRequest(f"model '{req.model.display}' does not support thinking")
        enabled = capable and req.think is not False
        level = req.think if isinstance(req.think, str) else None
        # Ollama's templates also read whether think was set (a thinking model's is, to true) and
        # its level ("medium" for true)
        go = {
            "think_set": capable or req.think is not None,
            "think_level": level or ("medium" if enabled else ""),
        }
        return enabled, {"enable_thinking": enabled, "think": enabled, "reasoning_effort": level, **go}

    def generate(self, req: GenerateRequest) -> AsyncIterator[Chunk]:
        spec, options, keep_alive = self._prepare(req, bool(req.images))
        if not req.prompt and not req.context and not req.suffix and req.empty_loads:
            return self._load_or_unload(req.model, options, keep_alive, {"response": ""})
        thinking, variables = self._thinking(req, spec)
        images = decode_images(req.images)
        if req.raw or req.suffix:  # FIM: the engine lays out prefix and suffix with the model's tokens
            prompt = with_images(req.prompt, len(images))
        else:
            system = req.system if req.system is not None else spec.system
            prompt = render(
                req.template or spec.template or PLAIN_TEMPLATE,
                generate_messages(
                    with_images(req.prompt, len(images)), system, [] if req.context else spec.messages
                ),
                **special_tokens(spec.config),
                **variables,
            )

        def parser(text: str) -> ReplyParser:
            return ReplyParser(thinking=thinking, in_thinking=thinking and opens_thinking(text))

        def shape(parts: Parts) -> dict[str, Any]:
            out: dict[str, Any] = {"response": parts.content}
            if parts.thinking:
                out["thinking"] = parts.thinking
            return out

        return self._run(
            req,
            options,
            keep_alive,
            (prompt, images),
            shape,
            parser,
            {"context": req.context, "format": req.format, "suffix": req.suffix},
        )

    def chat(self, req: ChatRequest) -> AsyncIterator[Chunk]:
        plan = self._chat_plan(req)
        if not req.messages:
            empty = {"message": {"role": "assistant", "content": ""}}
            return self._load_or_unload(req.model, plan.options, plan.keep_alive, empty)
        messages, build, options = plan.messages, plan.build, plan.options

        async def fitted(mold: TextGenerationMold) -> Prompt:
            kept = await fit_chat(mold, messages, build, options.num_ctx) if req.truncate else messages
            return build(kept), [image for m in kept for image in m.get("images", ())]

        def shape(parts: Parts) -> dict[str, Any]:
            message: dict[str, Any] = {"role": "assistant", "content": parts.content}
            if parts.thinking:
                message["thinking"] = parts.thinking
            if parts.calls:
                message["tool_calls"] = parts.calls
            return {"message": message}

        return self._run(req, options, plan.keep_alive, fitted, shape, plan.parser, plan.generation)

    async def count_chat(self, req: ChatRequest) -> int:
        """The tokens of a chat's whole prompt, not fitted to the window (Anthropic's count_tokens):
        counted a piece at a time (tokenizers can take time quadratic in a run without spaces), so a
        prompt past COUNT_PIECE characters may count a token more or less a piece."""
        plan = self._chat_plan(req)
        async with self.scheduler.use(req.model, plan.options, plan.keep_alive) as (runner, _):
            mold = runner.mold
            assert isinstance(mold, TextGenerationMold)
            parts = pieces(plan.build(plan.messages), COUNT_PIECE)
            counts = [await mold.run_in_worker(mold.count_tokens, part) for part in parts]
            if len(parts) > 1:  # the BOS (or other specials) each piece was counted with, but once
                counts.append(-(len(parts) - 1) * await mold.run_in_worker(mold.count_tokens, ""))
            return sum(counts)

    def _chat_plan(self, req: ChatRequest) -> _ChatPlan:
        """What a chat request becomes: its turns, how they render, the grammar and the reply's parser."""
        spec, options, keep_alive = self._prepare(req, any(m.images for m in req.messages))
        offered, required = choose(check_tools(req.tools), req.tool_choice)
        thinking, variables = self._thinking(req, spec)
        # the model's MESSAGEs start every conversation, as Ollama's do
        turns = []
        for i, m in enumerate(req.messages):
            turn = m.to_template()
            if m.images:  # the template sees a marker for each image; the images ride along
                turn["content"] = with_images(turn["content"], len(m.images))
                turn["images"] = decode_images(m.images, f"messages[{i}].images")
            turns.append(turn)
        native = knows_tools(spec.template)
        template = spec.template or PLAIN_TEMPLATE

        def build(turns: list[dict[str, Any]]) -> str:
            return render(
                template,
                turns if native else as_plain_turns(turns, offered),
                **special_tokens(spec.config),
                tools=[{"type": "function", "function": fn} for fn in offered.values()]
                if native and offered
                else None,
                prefill=prefill_of(turns),  # a chat ending with the assistant's text goes on with it
                **variables,
            )

        schema = call_schema(offered) if offered else None
        generation: dict[str, Any] = {"format": req.format}
        grammar_calls = bool(schema) and (required or not native)  # the model's own markup needs none
        if schema and req.format and not required:  # a call, or an answer in the asked format
            fmt = req.format if isinstance(req.format, dict) else {"type": "object"}
            generation["format"] = {"anyOf": [schema, fmt]}
            grammar_calls = False  # the parser tells which
        elif grammar_calls:  # (a required call outranks the format)
            generation.update(
                format=None,
                optional_call=schema,
                call_required=required,
                single_call=not req.parallel_tool_calls
                or isinstance(req.tool_choice, dict),  # a named tool: once
            )
        markers = call_markers(spec.template) if native else []

        def parser(text: str) -> ReplyParser:
            return ReplyParser(
                thinking=thinking,
                in_thinking=thinking and opens_thinking(text),
                tools=offered,
                markers=markers,
                json_calls=grammar_calls,
                max_calls=None if req.parallel_tool_calls else 1,
            )

        messages = with_system([*spec.messages, *turns], spec.system)
        return _ChatPlan(options, keep_alive, messages, build, generation, parser)


@dataclass
class _ChatPlan:
    options: Any
    keep_alive: float | None
    messages: list[dict[str, Any]]  # the turns to render, system and the model's MESSAGEs first
    build: Callable[[list[dict[str, Any]]], str]  # turns → prompt
    generation: dict[str, Any]  # GenerationInput's grammar fields
    parser: Callable[[str], ReplyParser]  # prompt → the reply's parser


COUNT_PIECE = 16_384  # characters count_chat tokenizes at a time


def pieces(text: str, size: int) -> list[str]:
    """The text in pieces of at most ``size`` characters, each but the first starting at a space where
    the second half of its predecessor has one (as tokenizers split words)."""
    out, start = [], 0
    while len(text) - start > size:
        cut = text.rfind(" ", start + size // 2, start + size)
        cut = cut if cut > start else start + size
        out.append(text[start:cut])
        start = cut
    return [*out, text[start:]]


def opens_thinking(prompt: str) -> bool:
    """Whether the rendered prompt already opened the thinking section (the reply starts inside it)."""
    return prompt.rstrip().endswith(THINK_OPEN)


async def fit_chat(
    mold: TextGenerationMold,
    messages: list[dict[str, Any]],
    build: Callable[[list[dict[str, Any]]], str],
    num_ctx: int,
) -> list[dict[str, Any]]:
    """The newest turns whose prompt fits the window, as Ollama truncates a chat: system messages
    always stay, the oldest other turns go first, the last message always stays."""
    window = mold.metadata().get("n_ctx") or num_ctx

    async def fits(text: str) -> bool:
        """Tokenized only when the length can't tell: every token is at least one byte of the text
        but BOS, EOS and a SentencePiece space prefix, and none is longer than MAX_TOKEN_CHARS (an
        image's marker is counted as the positions the image takes: always by the model)."""
        if len(text.encode()) + 3 < window and IMAGE_MARKER not in text:
            return True
        return (
            len(text) <= window * MAX_TOKEN_CHARS
            and await mold.run_in_worker(mold.count_tokens, text) < window
        )

    if await fits(build(messages)):
        return messages
    system = [m for m in messages if m["role"] == "system"]
    turns = [i for i, m in enumerate(messages) if m["role"] != "system"]

    def keep_from(cut: int) -> list[dict[str, Any]]:  # every system message, turns from turns[cut]
        first = turns[cut]
        return [m for i, m in enumerate(messages) if m["role"] == "system" or i >= first]

    low, high = 1, len(turns) - 1  # the smallest cut that fits, found by halving
    best = keep_from(len(turns) - 1) if turns else system
    while low <= high:
        mid = (low + high) // 2
        if await fits(build(keep_from(mid))):
            best, high = keep_from(mid), mid - 1
        else:
            low = mid + 1
    return best


def _merged_extras(chunks: list[Chunk], final: Chunk, text: dict[str, Any]) -> None:
    """Thinking, tool calls and logprobs of a whole reply, gathered from its chunks into ``text``
    (the message or the response object) and ``final``."""
    thinking = "".join(c.get("thinking", "") for c in _texts(chunks))
    if thinking:
        text["thinking"] = thinking
    logprobs = [e for c in chunks for e in c.get("logprobs") or []]
    if logprobs:
        final["logprobs"] = logprobs


def _texts(chunks: list[Chunk]) -> list[dict[str, Any]]:
    return [c.get("message", c) for c in chunks]


def merge_generate(chunks: list[Chunk]) -> Chunk:
    final = dict(chunks[-1])
    final["response"] = "".join(c.get("response", "") for c in chunks)
    final.pop("thinking", None)
    _merged_extras(chunks, final, final)
    return final


def merge_chat(chunks: list[Chunk]) -> Chunk:
    final = dict(chunks[-1])
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(c["message"]["content"] for c in chunks),
    }
    _merged_extras(chunks, final, message)
    calls = [call for c in chunks for call in c["message"].get("tool_calls") or []]
    if calls:
        message["tool_calls"] = calls
    final["message"] = message
    return final
