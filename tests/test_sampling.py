"""The pure-Python sampler (the page's GPU engine) and the host wgpu engine's numpy one: the same
candidates survive each step of llama.cpp's chain, seeded draws repeat, greedy takes the first maximum."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from ferrousforge.options import Options
from ferrousforge.sampling import sample, typical_keep
from ferrousforge_host.engines.wgpu_gguf import sample as sample_np

LOGITS = [2.0, 5.0, 1.0, 5.0, 4.5, -3.0, 0.5, 3.9, 4.0, -1.0]


def drawn(pick, opts: Options, history: list[int], n: int = 400) -> set[int]:
    return {pick(opts, history, i) for i in range(n)}


def pure(opts: Options, history: list[int], i: int) -> int:
    return sample(LOGITS, opts, history, random.Random(i))


def numpy(opts: Options, history: list[int], i: int) -> int:
    return sample_np(np.asarray(LOGITS, dtype=np.float32), opts, history, np.random.default_rng(i))


@pytest.mark.parametrize("pick", [pure, numpy])
def test_greedy_takes_the_first_of_equal_maxima(pick) -> None:
    assert pick(Options(temperature=0), [], 0) == 1
    assert pick(Options(temperature=1.0, top_k=1), [], 0) == 1


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"top_k": 3}, {1, 3, 4}),
        ({"top_k": 0, "min_p": 0.5}, {1, 3, 4}),  # e^-0.5 ≥ 0.5 > e^-1
        ({"top_k": 0, "top_p": 0.5}, {1, 3}),
        ({"top_k": 5, "typical_p": 0.5}, {1, 3, 4}),
        ({"top_k": 0, "repeat_penalty": 100.0, "repeat_last_n": 4, "min_p": 0.3}, {4, 8, 7}),
    ],
)
def test_both_samplers_keep_the_same_candidates(fields: dict, expected: set[int]) -> None:
    opts = Options(temperature=1.0, **fields)
    history = [1, 3]  # penalised: ids 1 and 3 fall to 0.05
    assert drawn(pure, opts, history) == expected
    assert drawn(numpy, opts, history) == expected


def test_a_seeded_draw_repeats() -> None:
    opts = Options(temperature=1.5, top_k=0, seed=3)
    sequence = random.Random(3)
    first = [sample(LOGITS, opts, [], sequence) for _ in range(20)]
    sequence = random.Random(3)
    assert [sample(LOGITS, opts, [], sequence) for _ in range(20)] == first
    assert len(set(first)) > 1  # a draw, not the maximum


def test_typical_keeps_the_tokens_nearest_the_entropy() -> None:
    probs = [0.5, 0.3, 0.15, 0.05]
    entropy = -sum(p * math.log(p) for p in probs)
    nearest = min(range(4), key=lambda i: abs(-math.log(probs[i]) - entropy))
    assert typical_keep(probs, 0.01) == [nearest]
    assert typical_keep(probs, 1.0) == [0, 1, 2, 3]
