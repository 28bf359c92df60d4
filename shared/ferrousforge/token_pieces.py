"""Each token's text as llama.cpp writes it (``token_to_piece`` without specials), from a GGUF's
``tokenizer.json``: byte-level BPE vocabularies map their characters back to bytes, SentencePiece ones
turn ``▁`` into a space and ``<0xNN>`` into that byte; special and control tokens write nothing.
Pure Python, so the page streams a GGUF model's output exactly as the host does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level_chars() -> dict[str, int]:
    """GPT-2's printable stand-in for each byte, inverted."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _is_byte_level(decoder: dict[str, Any] | None) -> bool:
    if not decoder:
        return False
    if decoder.get("type") == "Sequence":
        return any(_is_byte_level(d) for d in decoder.get("decoders", []))
    return decoder.get("type") == "ByteLevel"


def pieces(doc: dict[str, Any], control: Iterable[int] = ()) -> list[bytes]:
    """Every token id's bytes, from a parsed ``tokenizer.json`` and the ids llama.cpp reads as control
    tokens (``tokens.json``)."""
    model = doc["model"]
    vocab = model["vocab"]
    items = vocab.items() if isinstance(vocab, dict) else ((tok, i) for i, (tok, _) in enumerate(vocab))
    added = doc.get("added_tokens") or []
    size = max([len(vocab) - 1, *(int(t["id"]) for t in added)]) + 1
    out = [b""] * size
    if _is_byte_level(doc.get("decoder")):
        chars = _byte_level_chars()
        for token, i in items:
            out[i] = bytes(chars[c] for c in token) if all(c in chars for c in token) else token.encode()
    else:
        fallback = bool(model.get("byte_fallback"))
        for token, i in items:
            m = _BYTE_TOKEN.fullmatch(token) if fallback else None
            out[i] = bytes([int(m.group(1), 16)]) if m else token.replace("▁", " ").encode()
    for token in added:
        out[int(token["id"])] = b"" if token.get("special") else str(token["content"]).encode()
    for i in control:
        out[i] = b""
    return out
