"""Text generation on the GPU decoder, one sequence at a time: the same loop for the host's wgpu engine
and the page's WebGPU one.

The decoder's KV cache is kept between requests, so a prompt sharing a prefix with the last sequence
(the turns of a chat) runs only the rest. Greedy decoding reads back one token id a step; otherwise the
last row's logits come back and the engine's sampler picks. Stop strings, ``num_predict`` and the end of
the window end a generation as on the llama.cpp engine.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

from ferrousforge.generation import GenerationChunk, GenerationStats
from ferrousforge.gpu.decoder import Decoder
from ferrousforge.options import Options
from ferrousforge.sampling import StopMatcher, common_prefix, penalizes

# a row of logits and the tokens so far → the next token
Sampler = Callable[[list[float], list[int]], int]


class TokenText(Protocol):
    def piece(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...


class Sequence:
    """The decoder and the tokens whose keys and values its cache holds."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.cached: list[int] = []

    async def feed(
        self, tokens: list[int], start: int, greedy: bool
    ) -> tuple[int | None, list[float] | None]:
        """Run ``tokens`` at ``start``: the next token (greedy) or the last row's logits."""
        self.cached = self.cached[:start]  # what a failure leaves is unknown beyond here
        if greedy:
            token = (await self.decoder.greedy(tokens, start))[-1]
            self.cached += tokens
            return token, None
        rows = await self.decoder.logits(tokens, start)
        self.cached += tokens
        return None, rows[-1]

    async def generate(
        self, prompt: list[int], opts: Options, vocab: TokenText, sample: Sampler
    ) -> AsyncGenerator[GenerationChunk, None]:
        started = time.perf_counter_ns()
        n_ctx = self.decoder.n_ctx
        if not prompt or len(prompt) >= n_ctx:
            raise ValueError(f"a prompt of {len(prompt)} tokens does not fit the context of {n_ctx}")
        keep = min(common_prefix(self.cached, prompt), len(prompt) - 1)  # rerun at least the last token
        greedy = opts.temperature <= 0 and not penalizes(opts)
        room = n_ctx - len(prompt)
        limit = room if opts.num_predict < 0 else min(opts.num_predict, room)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(opts.stop)
        generated: list[int] = []
        token, logits = await self.feed(prompt[keep:], keep, greedy)
        prompt_done = time.perf_counter_ns()
        reason, flush = "length", True
        while len(generated) < limit:
            if token is None:
                assert logits is not None
                token = sample(logits, prompt + generated)
            if vocab.is_eog(token):
                reason = "stop"
                break
            generated.append(token)
            text, hit = stops.feed(decoder.decode(vocab.piece(token)))
            if text:
                yield GenerationChunk(text)
            if hit:
                reason, flush = "stop", False
                break
            if len(generated) >= limit:
                break
            token, logits = await self.feed([token], len(prompt) + len(generated) - 1, greedy)
        tail = stops.feed(decoder.decode(b"", final=True))[0] + stops.flush() if flush else ""
        finished = time.perf_counter_ns()
        stats = GenerationStats(
            prompt_eval_count=len(prompt),
            prompt_eval_duration=prompt_done - started,
            eval_count=len(generated),
            eval_duration=finished - prompt_done,
            total_duration=finished - started,
        )
        yield GenerationChunk(tail, done=True, done_reason=reason, stats=stats, context=prompt + generated)
