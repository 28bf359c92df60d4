"""Whisper's tokens in pure Python (no ``js``: the host's tests use it too): the special tokens read
from the model's ``vocabulary.txt``, the prompt a window starts with, the tokens greedy decoding
never picks, and token ids back to text (GPT-2's byte-level alphabet → UTF-8)."""

from __future__ import annotations

from collections.abc import Sequence

MULTILINGUAL_VOCAB = 51865


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte: printable Latin-1 maps to itself, the rest to 256+."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in kept}
    extra = 0
    for b in range(256):
        if b not in kept:
            table[chr(256 + extra)] = b
            extra += 1
    return table


_BYTES = _byte_alphabet()


class WhisperTokens:
    def __init__(self, vocabulary: str, config: dict[str, object]) -> None:
        self.vocab = vocabulary.split("\n")
        if self.vocab and self.vocab[-1] == "":
            self.vocab.pop()
        ids = {t: i for i, t in enumerate(self.vocab) if t.startswith("<|")}
        self.eot = ids["<|endoftext|>"]
        self.sot = ids["<|startoftranscript|>"]
        self.no_timestamps = ids["<|notimestamps|>"]
        self.transcribe = ids.get("<|transcribe|>")
        self.translate = ids.get("<|translate|>")
        self.multilingual = len(self.vocab) >= MULTILINGUAL_VOCAB  # English-only models: one fewer
        self.languages = {t[2:-2]: i for t, i in ids.items() if self.sot < i < (self.translate or 0)}
        self.suppress = sorted(
            set(_ints(config.get("suppress_ids"))) | set(range(self.eot + 1, len(self.vocab)))
        )
        self.suppress_begin = sorted(set(_ints(config.get("suppress_ids_begin"))) | {self.eot})

    def prompt(self, language: str | None = None, task: str = "transcribe") -> list[int]:
        """The start of a window without timestamps: sot [, language, task], notimestamps."""
        tokens = [self.sot]
        if self.multilingual:
            task_token = self.translate if task == "translate" else self.transcribe
            tokens += [self.languages[language or "en"], int(task_token or 0)]
        return [*tokens, self.no_timestamps]

    def not_languages(self) -> list[int]:
        """Every token but the language tokens: suppressed to detect the language after sot."""
        keep = set(self.languages.values())
        return [i for i in range(len(self.vocab)) if i not in keep]

    def language_of(self, token: int) -> str:
        return next(code for code, i in self.languages.items() if i == token)

    def text(self, ids: Sequence[int]) -> str:
        data = bytes(_BYTES[ch] for i in ids if i < self.eot for ch in self.vocab[i])
        return data.decode("utf-8", errors="replace")


def _ints(value: object) -> list[int]:
    return [int(v) for v in value] if isinstance(value, list) else []
