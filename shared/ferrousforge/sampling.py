"""Ollama's sampling options as llama.cpp's sampler chain applies them, in pure Python (the page's GPU
engine samples here; the host's engines use llama.cpp's sampler or numpy), and stop strings in streamed
text. The chain's order: penalties, top-k, typical, top-p, min-p, temperature, a seeded draw."""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ferrousforge.options import Options


class StopMatcher:
    """Finds stop strings in streamed text, holding back what could be the start of one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.pending = ""
        self.matched: str | None = None  # the stop string that ended the text
        self.dropped = 0  # characters the stop string and what followed it took from the text

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop string was hit)."""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out, False
        hits = [(i, s) for s in self.stops if (i := self.pending.find(s)) >= 0]
        if hits:
            at, self.matched = min(hits)
            out, self.pending, self.dropped = self.pending[:at], "", len(self.pending) - at
            return out, True
        hold = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(stop[:n]):
                    hold = n
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def said(self, logprobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Of token logprobs (the newest last), those of the tokens whose text was given out: not the
        stop string's."""
        budget, kept = self.dropped, list(logprobs)
        while kept and budget > 0:
            budget -= len(kept.pop()["token"])
        return kept

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def penalizes(opts: Options) -> bool:
    on = opts.repeat_penalty != 1.0 or opts.presence_penalty != 0 or opts.frequency_penalty != 0
    return bool(on and opts.repeat_last_n != 0)


def penalty_window(history: list[int], opts: Options, n_ctx: int) -> list[int]:
    """The tokens penalties count: the last ``repeat_last_n`` (-1: the window's worth, 0: none)."""
    last_n = n_ctx if opts.repeat_last_n < 0 else opts.repeat_last_n
    return history[-last_n:] if last_n else []


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n, limit = 0, min(len(a), len(b))
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def typical_keep(probs: Sequence[float], typical_p: float) -> list[int]:
    """Locally typical sampling: positions of the candidates whose surprise is nearest the entropy,
    until their probability reaches ``typical_p`` (probs sum to 1)."""
    entropy = -sum(p * math.log(p) for p in probs if p > 0)
    shifted = [abs(-math.log(p) - entropy) if p > 0 else math.inf for p in probs]
    order = sorted(range(len(probs)), key=shifted.__getitem__)
    kept, total = [], 0.0
    for i in order:
        kept.append(i)
        total += probs[i]
        if total >= typical_p:
            break
    return sorted(kept)  # back in order of likelihood


def _softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def sample(
    logits: Sequence[float],
    opts: Options,
    history: list[int],
    rng: random.Random,
    ids: Sequence[int] | None = None,
) -> int:
    """One token from a row of logits (``ids``: the tokens they belong to, when only the candidates
    came back; else the whole vocabulary in order). The history: prompt and output so far."""
    x = list(logits)
    token = (lambda i: i) if ids is None else ids.__getitem__
    if penalizes(opts):
        at = None if ids is None else {t: i for i, t in enumerate(ids)}
        counts = Counter(penalty_window(history, opts, len(history)))
        for tok, count in counts.items():
            i = tok if at is None else at.get(tok)
            if i is None:  # not a candidate: penalties only lower it further
                continue
            value = x[i]
            if opts.repeat_penalty != 1.0:
                value = value * opts.repeat_penalty if value <= 0 else value / opts.repeat_penalty
            x[i] = value - (count * opts.frequency_penalty + opts.presence_penalty)
    if opts.temperature <= 0:  # the first of equal maxima (candidates come best first, ties by id)
        return token(max(range(len(x)), key=x.__getitem__))
    k = opts.top_k if 0 < opts.top_k < len(x) else len(x)
    order = heapq.nlargest(k, range(len(x)), key=x.__getitem__)  # stable: ties keep the lower id first
    kept = [x[i] for i in order]
    if opts.typical_p < 1.0:
        keep = typical_keep(_softmax(kept), opts.typical_p)
        order, kept = [order[i] for i in keep], [kept[i] for i in keep]
    if opts.top_p < 1.0:
        total, cut = 0.0, len(kept)
        for i, p in enumerate(_softmax(kept)):
            total += p
            if total >= opts.top_p:
                cut = i + 1
                break
        order, kept = order[:cut], kept[:cut]
    if opts.min_p > 0.0:
        probs = _softmax(kept)
        keep = [i for i, p in enumerate(probs) if p >= opts.min_p * probs[0]]
        order, kept = [order[i] for i in keep], [kept[i] for i in keep]
    weights = _softmax([v / opts.temperature for v in kept])
    return token(order[rng.choices(range(len(order)), weights=weights)[0]])
