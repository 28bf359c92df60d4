"""Text generation on the GPU decoder: the same loop for the host's wgpu engine and the page's WebGPU
one, with the decode steps of every sequence running at once batched into one pass.

A sampled step reads back the row's TOP_K most likely tokens (reduced on the GPU, 1 KB) wherever they
hold every token the sampler could keep (``candidates_suffice``), else the whole row.

Each slot's KV cache is kept between requests, so a prompt sharing a prefix with an earlier sequence
(the turns of a chat) runs only the rest. Greedy decoding chains up to CHAIN_STEPS decode steps in one
pass, each step's argmax the next one's input on the GPU, and reads their token ids back at once (the
host and the readback stand between passes, not between tokens; tokens past a stop are dropped);
otherwise the last row's logits (or candidates) come back each step and the engine's sampler picks.
Stop strings, ``num_predict`` and the end of the window (or, with ``shift``, a context shift) end or
go on with a generation as on the llama.cpp engine.
"""

from __future__ import annotations

import asyncio
import codecs
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ferrousforge.generation import GenerationChunk, GenerationStats
from ferrousforge.gpu.decoder import Decoder
from ferrousforge.gpu.ops import TOP_K
from ferrousforge.options import Options
from ferrousforge.sampling import StopMatcher, common_prefix, penalizes, penalty_window

# logits, the token ids they belong to (None: the whole vocabulary) and the tokens so far → the next token
Sampler = Callable[[list[float], list[int] | None, list[int]], int]
PROMPT_CHUNK = 256  # the most prompt tokens in one pass
CHAIN_STEPS = 8  # the most greedy decode steps one pass chains
SHIFT_WINDOWS = 8  # with shift and no num_predict, generation ends after this many windows (llama.cpp's)


class TokenText(Protocol):
    def piece(self, token: int) -> bytes: ...

    def is_eog(self, token: int) -> bool: ...


@dataclass
class Step:
    """What a pass gives a sequence: its next greedy tokens (one, or a chain's, in order), or logits to
    sample from with the token ids they belong to (``ids`` None: every token's, in order)."""

    tokens: list[int] | None = None
    values: list[float] | None = None
    ids: list[int] | None = None


@dataclass
class _Feed:
    slot: int
    tokens: list[int]
    start: int
    read: str  # "greedy" (up to ``steps`` greedy steps) | "top" (the TOP_K candidates) | "logits"
    done: asyncio.Future[Step]
    steps: int = 1


def candidates_suffice(opts: Options, history: list[int]) -> bool:
    """Whether the TOP_K candidates hold every token the sampler could keep: top_k cuts the choice to
    them, and penalties only lower logits, so each penalised candidate lets one more in."""
    if opts.top_k <= 0:
        return False
    if not penalizes(opts):
        return opts.top_k <= TOP_K
    if opts.repeat_penalty < 1 or opts.frequency_penalty < 0 or opts.presence_penalty < 0:
        return False
    return opts.top_k + len(set(penalty_window(history, opts, len(history)))) <= TOP_K


class Slots:
    """The decoder's sequences: which tokens each slot's cache holds, and the passes that feed them.

    A sequence takes a free slot (the one whose cached tokens share the longest prefix with its prompt)
    or waits for one. Its tokens reach the decoder through ``feed``: feeds that arrive while a pass runs
    wait for the next one, where every decode step (one new token each) travels in one pass and a prompt
    in a pass of its own. Runs on one event loop (the page's; on the host the engine's own thread).
    """

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.cached: list[list[int]] = [[] for _ in range(decoder.slots)]
        self.free = list(range(decoder.slots))
        self.widest = 0  # the most decode steps one pass has carried (for tests and stats)
        self._waiting: list[asyncio.Future[int]] = []
        self._pending: list[_Feed] = []
        self._runner: asyncio.Task[None] | None = None

    async def acquire(self, prompt: list[int]) -> int:
        if not self.free:  # wait in turn: a freed slot goes to the longest waiting sequence
            waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            return await waiter
        slot = max(self.free, key=lambda s: common_prefix(self.cached[s], prompt))
        self.free.remove(slot)
        return slot

    def release(self, slot: int) -> None:
        while self._waiting:
            waiter = self._waiting.pop(0)
            if not waiter.done():  # (a waiter whose request went away is cancelled)
                waiter.set_result(slot)
                return
        self.free.append(slot)

    async def feed(self, slot: int, tokens: list[int], start: int, read: str, steps: int = 1) -> Step:
        """Run ``tokens`` at ``start`` in ``slot``; read the last row as ``read`` says ("greedy": up to
        ``steps`` greedy tokens, chained in one pass; fewer where the pass's other rows want fewer)."""
        loop = asyncio.get_running_loop()
        item = _Feed(slot, tokens, start, read, loop.create_future(), steps)
        self._pending.append(item)
        if self._runner is None:  # starts after the tasks already woken, so their steps join this pass
            self._runner = loop.create_task(self._run_pending())
        return await item.done

    async def _run_pending(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                steps = [f for f in batch if len(f.tokens) == 1]
                for prompt in (f for f in batch if len(f.tokens) > 1):
                    await self._pass([prompt])
                if steps:
                    self.widest = max(self.widest, len(steps))
                    await self._pass(steps)
        finally:
            self._runner = None

    async def _pass(self, feeds: list[_Feed]) -> None:
        """One pass for decode steps (every row's outputs), or a prompt's chunks (the last row's)."""
        for f in feeds:
            self.cached[f.slot] = self.cached[f.slot][: f.start]  # what a failure leaves is unknown
        try:
            top = any(f.read == "top" for f in feeds)  # (the candidates cost a few dispatches more)
            fed = [f.tokens for f in feeds]  # the tokens whose keys and values the pass caches
            chain = min(f.steps for f in feeds) if all(f.read == "greedy" for f in feeds) else 1
            if len(feeds) == 1 and len(feeds[0].tokens) > 1:
                results = await self._read(self._prompt(feeds[0], top), feeds, [0])
            elif chain > 1:
                run = self.decoder.submit([(f.tokens[0], f.start, f.slot) for f in feeds], chain=chain)
                chains = await self.decoder.read_chain(run, len(feeds), chain)
                results = [Step(tokens=tokens) for tokens in chains]
                fed = [[f.tokens[0], *tokens[:-1]] for f, tokens in zip(feeds, chains, strict=True)]
            else:
                run = self.decoder.submit([(f.tokens[0], f.start, f.slot) for f in feeds], top=top)
                results = await self._read(run, feeds, list(range(len(feeds))))
        except Exception as exc:
            for f in feeds:
                if not f.done.done():
                    f.done.set_exception(exc)
            return
        for f, tokens, result in zip(feeds, fed, results, strict=True):
            self.cached[f.slot] += tokens
            if not f.done.done():
                f.done.set_result(result)

    async def _read(self, run: Any, feeds: list[_Feed], rows: list[int]) -> list[Step]:
        """Each feed's step from its row of a pass's outputs, as its ``read`` says."""
        greedy = any(f.read == "greedy" for f in feeds)
        best = await self.decoder.read_best(run, len(rows)) if greedy else []
        results: list[Step] = []
        for f, row in zip(feeds, rows, strict=True):
            if f.read == "greedy":
                results.append(Step(tokens=[best[row]]))
            elif f.read == "top":
                ids, values = await self.decoder.read_top(run, row)
                results.append(Step(values=values, ids=ids))
            else:
                results.append(Step(values=await self.decoder.read_logits(run, row)))
        return results

    def _prompt(self, feed: _Feed, top: bool) -> Any:
        """A prompt in chunks of power-of-two sizes (at most PROMPT_CHUNK), so the decoder records a
        few pass shapes, not one per prompt length; only the last chunk projects onto the vocabulary."""
        done, run = 0, None
        while done < len(feed.tokens):
            left = len(feed.tokens) - done
            size = min(PROMPT_CHUNK, 1 << (left.bit_length() - 1))
            last = done + size == len(feed.tokens)
            rows = [
                (tok, feed.start + done + i, feed.slot)
                for i, tok in enumerate(feed.tokens[done : done + size])
            ]
            run = self.decoder.submit(rows, "last" if last else "none", top)
            done += size
        return run

    async def generate(
        self, prompt: list[int], opts: Options, vocab: TokenText, sample: Sampler, shift: bool = False
    ) -> AsyncGenerator[GenerationChunk, None]:
        """With ``shift`` a full window drops half its tokens after ``num_keep`` and generation goes
        on, as on the llama.cpp engine (the kept ones' keys are computed again at their new places)."""
        started = time.perf_counter_ns()
        n_ctx = self.decoder.n_ctx
        if not prompt or len(prompt) >= n_ctx:
            raise ValueError(f"a prompt of {len(prompt)} tokens does not fit the context of {n_ctx}")
        slot = await self.acquire(prompt)
        try:
            async for chunk in self._generate(slot, prompt, opts, vocab, sample, started, shift):
                yield chunk
        finally:
            self.release(slot)

    async def _generate(
        self,
        slot: int,
        prompt: list[int],
        opts: Options,
        vocab: TokenText,
        sample: Sampler,
        started: int,
        shift: bool,
    ) -> AsyncGenerator[GenerationChunk, None]:
        n_ctx = self.decoder.n_ctx
        keep = min(common_prefix(self.cached[slot], prompt), len(prompt) - 1)  # rerun at least the last
        greedy = opts.temperature <= 0 and not penalizes(opts)
        kept = min(opts.num_keep, n_ctx // 2)  # a shift keeps these first tokens...
        dropped = 0  # ...and drops the ones after them, these many so far

        def window() -> list[int]:
            """The tokens the slot's cache holds (every one taken so far is in it), in order."""
            tokens = prompt + generated
            return tokens[:kept] + tokens[kept + dropped :] if dropped else tokens

        def read(history: list[int]) -> str:
            return "greedy" if greedy else "top" if candidates_suffice(opts, history) else "logits"

        room = SHIFT_WINDOWS * n_ctx if shift else n_ctx - len(prompt)
        limit = room if opts.num_predict < 0 else min(opts.num_predict, room)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = StopMatcher(opts.stop)
        generated: list[int] = []
        step = await self.feed(slot, prompt[keep:], keep, read(prompt))
        prompt_done = time.perf_counter_ns()
        reason, flush = "length", True
        ahead: list[int] = []  # a chain's tokens not yet taken
        while len(generated) < limit:
            if not ahead:
                if step.tokens is not None:
                    ahead = list(step.tokens)
                else:
                    assert step.values is not None
                    ahead = [sample(step.values, step.ids, window())]
            token = ahead.pop(0)
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
            if ahead:
                continue
            at = len(prompt) + len(generated) - 1 - dropped  # where the token goes in the cache
            if at >= n_ctx:  # full (only with shift): half of what follows the kept tokens goes
                dropped += (at - kept) // 2
                tokens = window()
                step = await self.feed(slot, tokens[kept:], kept, read(tokens))
                continue
            steps = min(CHAIN_STEPS, limit - len(generated), n_ctx - at) if greedy else 1
            step = await self.feed(slot, [token], at, read(window()), steps)
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
