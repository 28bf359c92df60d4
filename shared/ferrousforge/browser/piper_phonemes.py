"""Piper's text → phoneme ids, as piper-tts does it on the host (``piper/phonemize_espeak.py`` and
``piper/phoneme_ids.py``), from espeak-ng's clauses. Pure Python: the page gets the clauses from
espeak-ng in WebAssembly (``web/piper.mjs``), the host's tests from piper's own espeak-ng bridge.

A clause is ``(phonemes, terminator, end_of_sentence)``: espeak-ng's IPA for the clause, the
punctuation that ended it ("" at the end of the text) and whether it ends a sentence."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

BOS, EOS, PAD = "^", "$", "_"
LANGUAGE_FLAG = re.compile(r"\([^)]+\)")  # espeak-ng's "(fr)" … "(en)" around a foreign word

Clause = tuple[str, str, bool]


def sentences(
    clauses: Iterable[Clause], vowel_clusters: set[tuple[str, ...]] | None = None
) -> list[list[str]]:
    """Phonemes grouped by sentence: the terminator kept as a phoneme, a space after , : ; and each
    phoneme string decomposed (NFD) into code points, so accents are phonemes of their own."""
    out: list[list[str]] = []
    current: list[str] = []
    for phonemes, terminator, end in clauses:
        text = LANGUAGE_FLAG.sub("", phonemes) + terminator
        if terminator in (",", ":", ";"):
            text += " "
        current.extend(unicodedata.normalize("NFD", text))
        if end:
            out.append(merge_clusters(current, vowel_clusters))
            current = []
    if current:
        out.append(merge_clusters(current, vowel_clusters))
    return [s for s in out if s]


def merge_clusters(phones: list[str], clusters: set[tuple[str, ...]] | None) -> list[str]:
    """Adjacent phonemes that form one of the voice's known vowel clusters become one phoneme."""
    if not clusters:
        return phones
    longest = max(len(c) for c in clusters)
    out: list[str] = []
    i = 0
    while i < len(phones):
        match = next(
            (
                tuple(phones[i : i + n])
                for n in range(min(longest, len(phones) - i), 1, -1)
                if tuple(phones[i : i + n]) in clusters
            ),
            None,
        )
        out.append("".join(match) if match else phones[i])
        i += len(match) if match else 1
    return out


def phoneme_ids(phonemes: Sequence[str], id_map: Mapping[str, Sequence[int]]) -> list[int]:
    """BOS, then each phoneme's ids followed by PAD's, then EOS; a phoneme the voice lacks is skipped."""
    ids = [*id_map[BOS], *id_map[PAD]]
    for phoneme in phonemes:
        if phoneme in id_map:
            ids.extend(id_map[phoneme])
            ids.extend(id_map[PAD])
    ids.extend(id_map[EOS])
    return ids


def vowel_clusters(config: Mapping[str, Any]) -> set[tuple[str, ...]] | None:
    """The voice's vowel clusters (``.onnx.json``), as piper's config reads them."""
    found = config.get("vowel_clusters")
    return {tuple(c) for c in found} if found else None
