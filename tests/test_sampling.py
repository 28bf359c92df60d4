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


def test_the_gpus_candidates_sample_as_the_whole_row_does() -> None:
    """Where candidates_suffice, sampling from the TOP_K candidates (best first, ties by id, as the GPU
    gives them) picks what sampling from the whole row picks, seed for seed, in both samplers."""
    from ferrousforge.gpu.generate import candidates_suffice
    from ferrousforge.gpu.ops import TOP_K

    gen = np.random.default_rng(5)
    row = np.round(gen.standard_normal(5000) * 3, 1).astype(np.float32)  # many ties
    ids = sorted(range(len(row)), key=lambda i: (-row[i], i))[:TOP_K]
    history = [*ids[:30:3], 4000, 4001]  # some candidates penalised, some other tokens
    for fields in (
        {"top_k": 40},
        {"top_k": 40, "repeat_penalty": 1.3, "presence_penalty": 0.5, "top_p": 0.9},
        {"top_k": 20, "min_p": 0.05, "typical_p": 0.8, "frequency_penalty": 0.2},
        {"top_k": 40, "temperature": 0, "repeat_penalty": 1.5},
    ):
        opts = Options(**{"temperature": 0.8, **fields})  # type: ignore[arg-type]
        assert candidates_suffice(opts, history)
        top = [float(row[i]) for i in ids]
        for seed in range(30):
            whole = sample(row.tolist(), opts, history, random.Random(seed))
            assert sample(top, opts, history, random.Random(seed), ids) == whole
            whole_np = sample_np(row, opts, history, np.random.default_rng(seed))
            assert (
                sample_np(np.asarray(top, np.float32), opts, history, np.random.default_rng(seed), ids)
                == whole_np
            )


def test_candidates_do_not_suffice_without_top_k_or_with_raising_penalties() -> None:
    from ferrousforge.gpu.generate import candidates_suffice

    assert candidates_suffice(Options(top_k=40), [])
    assert not candidates_suffice(Options(top_k=0), [])
    assert not candidates_suffice(Options(top_k=200), [])
    assert not candidates_suffice(Options(top_k=40, presence_penalty=-0.5, repeat_last_n=8), [1, 2])
    many = list(range(100))  # 100 penalised tokens + top_k 40 > 128
    assert not candidates_suffice(Options(top_k=40, repeat_penalty=1.1, repeat_last_n=-1), many)
