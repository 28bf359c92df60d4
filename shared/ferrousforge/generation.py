"""The text-generation Mold kind: requests, streamed chunks and Ollama's stats."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ferrousforge.mold import Capability, Mold
from ferrousforge.options import Options

# No vocabulary has tokens this long: a text longer than a window's tokens times this can't fit in the
# window, whatever it says, and is cut (or refused) before it is tokenized at all.
MAX_TOKEN_CHARS = 64
# Where an image goes in a prompt: each marker takes the next of the request's images, in order
# (llama.cpp's media marker, so a rendered prompt passes to its multimodal tokenizer as it is)
IMAGE_MARKER = "<__media__>"


@dataclass
class GenerationInput:
    prompt: str
    options: Options
    context: list[int] = field(default_factory=list)  # tokens of an earlier exchange, put before the prompt
    format: str | dict[str, Any] | None = None  # "json" or a JSON schema the output must match
    optional_call: dict[str, Any] | None = None  # schema of a tool call the reply may be (else free text)
    call_required: bool = False  # the reply must be calls (``optional_call``)
    single_call: bool = False  # ... at most one of them (parallel_tool_calls: false)
    suffix: str = ""  # fill-in-the-middle: the text after the gap (``prompt`` is the text before)
    truncate: bool = True  # a prompt longer than the window keeps its start (num_keep) and its end
    shift: bool = True  # a full window drops half of its older tokens and generation goes on
    logprobs: bool = False  # report each generated token's log-probability
    top_logprobs: int = 0  # ... and this many most likely alternatives (0 to 20)
    prompt_logprobs: bool = False  # ... and each prompt token's, given the tokens before it (echo)
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id → added to its logit
    images: list[bytes] = field(default_factory=list)  # encoded images, one for each IMAGE_MARKER


@dataclass
class GenerationStats:
    """Counts and durations (ns) as Ollama reports them."""

    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    load_duration: int = 0
    total_duration: int = 0


@dataclass
class GenerationChunk:
    text: str = ""
    done: bool = False
    done_reason: str | None = None  # "stop" | "length" once done
    stats: GenerationStats | None = None
    context: list[int] | None = None  # all tokens of the exchange, on the last chunk
    # Ollama's logprobs of the tokens behind this chunk's text: {token, logprob, bytes, top_logprobs}
    logprobs: list[dict[str, Any]] | None = None
    stop_sequence: str | None = None  # on the last chunk: the stop string that ended the reply
    # with prompt_logprobs, once, before the reply: the prompt's tokens (the first one's logprob None)
    prompt_logprobs: list[dict[str, Any]] | None = None


@dataclass
class GenerationResult:
    text: str
    done_reason: str
    stats: GenerationStats
    context: list[int]


class TextGenerationMold(Mold):
    task: ClassVar[str] = "generate"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.COMPLETION})

    @abstractmethod
    def stream_sync(self, request: GenerationInput) -> Iterator[GenerationChunk]:
        """Engine primitive: generate for one request, yielding text pieces then a last chunk."""

    @abstractmethod
    def count_tokens(self, text: str) -> int: ...

    def stream(self, request: GenerationInput) -> AsyncIterator[GenerationChunk]:
        return self.iterate_in_worker(lambda: self.stream_sync(request))

    async def infer(self, request: GenerationInput) -> GenerationResult:
        parts: list[str] = []
        last = GenerationChunk()
        async for chunk in self.stream(request):
            parts.append(chunk.text)
            last = chunk
        return GenerationResult(
            "".join(parts), last.done_reason or "stop", last.stats or GenerationStats(), last.context or []
        )

    async def batch(self, requests: list[GenerationInput]) -> list[GenerationResult]:
        return [await self.infer(r) for r in requests]
