"""A GGUF's vocabulary as a ``tokenizer.json``: what the page's GPU engine tokenizes with
(``@huggingface/tokenizers``), equal to llama.cpp's tokenizer for the same file
(``tests/test_gguf_tokenizer.py``).

The conversion is transformers' (``transformers.integrations.gguf``: BPE and SentencePiece vocabularies,
special and user-defined tokens); llama.cpp's own reading of the vocabulary travels beside it as
``tokens.json``: whether a BOS token starts a prompt, which tokens end a generation and which are
control tokens. Each token's text as llama.cpp writes it follows from the vocabulary
(``ferrousforge.token_pieces``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, normalizers, pre_tokenizers

from ferrousforge.gguf import GGUFError, read_file_metadata
from ferrousforge.gpu.decoder import ARCHITECTURES
from ferrousforge.manifest import FILE, TOKENIZER, Layer, Manifest
from ferrousforge.names import ModelName
from ferrousforge_host.store import BlobStore

FILE_NAME = "tokenizer.json"
FACTS_NAME = "tokens.json"


class TokenizerUnsupported(Exception):
    pass


def convert(path: Path) -> tuple[str, dict[str, Any]]:
    """The ``tokenizer.json`` of a GGUF file, and llama.cpp's facts about its tokens."""
    import llama_cpp as L

    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            GGUF_TOKENIZER_MAPPING,
            convert_gguf_tokenizer,
        )
    except ImportError as exc:  # a transformers laid out otherwise: the model is kept, wasm-only in a page
        raise TokenizerUnsupported(f"this transformers cannot convert GGUF vocabularies: {exc}") from exc

    # the metadata as transformers' get_gguf_tokenizer gathers it, read here: its reader needs torch
    renames = GGUF_TOKENIZER_MAPPING["tokenizer"]
    try:
        meta = read_file_metadata(str(path), frozenset(f"tokenizer.{key}" for key in renames))
        tokenizer_dict = {
            name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta
        }
        tokenizer, _ = convert_gguf_tokenizer(str(meta["general.architecture"]), tokenizer_dict)
    except (GGUFError, KeyError, ValueError, NotImplementedError) as exc:
        raise TokenizerUnsupported(f"cannot convert this GGUF's vocabulary: {exc}") from exc
    _prefix_every_fragment(tokenizer)
    text = tokenizer.to_str()
    params = L.llama_model_default_params()
    params.vocab_only = True
    model = L.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise TokenizerUnsupported("llama.cpp cannot read this GGUF's vocabulary")
    try:
        vocab = L.llama_model_get_vocab(model)
        size = L.llama_vocab_n_tokens(vocab)
        facts = {
            "add_bos": bool(L.llama_vocab_get_add_bos(vocab)),
            "bos": int(L.llama_vocab_bos(vocab)),
            "eog": [t for t in range(size) if L.llama_vocab_is_eog(vocab, t)],
            # tokens llama.cpp treats as control tokens (writing nothing for them) whatever their type
            "control": [
                t for t in range(size) if L.llama_vocab_get_attr(vocab, t) & L.LLAMA_TOKEN_ATTR_CONTROL
            ],
        }
    finally:
        L.llama_model_free(model)
    return text, facts


def _prefix_every_fragment(tokenizer: Tokenizer) -> None:
    """SentencePiece vocabularies that add a space prefix: llama.cpp adds it to the start of every piece
    of text after a special token (and to the first), also before a leading space, where transformers'
    ``Metaspace`` pre-tokenizer skips text that starts with one. As a normalizer it applies to each
    piece of text between added tokens, as llama.cpp's does."""
    pre = tokenizer.pre_tokenizer
    if not isinstance(pre, pre_tokenizers.Metaspace) or pre.prepend_scheme == "never" or pre.split:
        return
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.pre_tokenizer = None


def with_tokenizer(store: BlobStore, manifest: Manifest, arch: str) -> Manifest:
    """``manifest`` with ``tokenizer.json`` and ``tokens.json`` layers made from its GGUF (unchanged
    where it has them already, the GPU decoder does not run its architecture ``arch`` or its vocabulary
    can't be converted: the page then runs it on wasm only)."""
    model = manifest.model_layer
    if model is None or arch not in ARCHITECTURES or manifest.layer(TOKENIZER) is not None:
        return manifest
    try:
        text, facts = convert(store.blob_path(model.digest))
    except TokenizerUnsupported:
        return manifest
    digest, size = store.write_bytes(text.encode())
    facts_digest, facts_size = store.write_bytes(json.dumps(facts).encode())
    added = (Layer(TOKENIZER, digest, size, FILE_NAME), Layer(FILE, facts_digest, facts_size, FACTS_NAME))
    return Manifest(manifest.config, (*manifest.layers, *added))


def ensure_tokenizer(store: BlobStore, name: ModelName, manifest: Manifest, arch: str) -> Manifest:
    """For a model stored before its pull wrote one (or pulled from a registry): convert now, keep it."""
    updated = with_tokenizer(store, manifest, arch)
    if updated is not manifest:
        store.put(name, updated)
    return updated
