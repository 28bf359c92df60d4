"""The grammars ``format`` and tools are held to, applied by llama.cpp's own grammar sampler to a tiny
model's byte tokens (ferrousforge_host.engines.llamacpp.grammar_for)."""

from __future__ import annotations

import ctypes
import math
from collections.abc import Iterator
from pathlib import Path

import llama_cpp as L
import pytest

from ferrousforge_host.engines.llamacpp import grammar_for

from tinymodel import vocabulary, write_tiny_llama

TOKENS = vocabulary()[0]


def byte_token(ch: str) -> int:
    return TOKENS.index(f"<0x{ord(ch):02X}>")


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    path = write_tiny_llama(Path(tmp_path_factory.mktemp("grammar")) / "tiny.gguf")
    params = L.llama_model_default_params()
    params.vocab_only = True
    model = L.llama_model_load_from_file(str(path).encode(), params)
    yield L.llama_model_get_vocab(model)
    L.llama_model_free(model)


def allowed(vocab: object, grammar: str, prefix: str, candidates: str) -> str:
    """Which of ``candidates`` (one byte token each) the grammar lets follow ``prefix``."""
    sampler = L.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    try:
        for ch in prefix:
            L.llama_sampler_accept(sampler, byte_token(ch))
        data = (L.llama_token_data * len(candidates))(
            *(L.llama_token_data(byte_token(ch), 0.0, 0.0) for ch in candidates)
        )
        array = L.llama_token_data_array(data, len(candidates), -1, False)
        L.llama_sampler_apply(sampler, ctypes.byref(array))
        return "".join(ch for ch, d in zip(candidates, data, strict=True) if math.isfinite(d.logit))
    finally:
        L.llama_sampler_free(sampler)


SCHEMA = {"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]}


def test_a_schema_string_takes_no_raw_control_characters(vocab: object) -> None:
    """JSON forbids them unescaped: a model that emits a newline inside a string gave invalid JSON."""
    grammar = grammar_for(SCHEMA)
    assert grammar is not None
    assert allowed(vocab, grammar, '{"s":"', 'a\n\t\x01\x7f\\"') == 'a\\"'
    assert allowed(vocab, grammar, '{"s":"\\', "nt\n") == "nt"  # as escapes they are fine


def test_json_format_strings_take_none_either(vocab: object) -> None:
    grammar = grammar_for("json")
    assert grammar is not None
    assert allowed(vocab, grammar, '{"s":"', "a\n\t\x01") == "a"
