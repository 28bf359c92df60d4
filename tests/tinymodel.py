"""A tiny random Llama GGUF, written deterministically with the ``gguf`` package (loads in ms)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import gguf
import numpy as np

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Qwen3's way: the prompt opens a thinking section when thinking is on (a tiny model's reply is then
# all thinking: it never closes it)
THINKING_CHATML = CHATML.replace(
    "{{ '<|im_start|>assistant\n' }}",
    "{{ '<|im_start|>assistant\n' }}{% if enable_thinking %}{{ '<think>\n' }}{% endif %}",
)
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "with",
    "was",
    "on",
    "be",
    "at",
    "by",
    "this",
    "had",
    "not",
    "are",
    "but",
    "from",
    "or",
    "have",
    "an",
    "they",
    "which",
    "one",
    "you",
]


def vocabulary(extra: tuple[str, ...] = ()) -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    types = [2, 3, 3, 3, 3]
    tokens += [f"<0x{i:02X}>" for i in range(256)]
    types += [6] * 256
    pieces = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [
        "▁" + chr(c) for c in range(ord("a"), ord("z") + 1)
    ]
    pieces += ["▁" + w for w in WORDS] + ["▁", ".", ",", "!", "?", "{", "}", '"', ":", "[", "]"]
    tokens += pieces
    types += [1] * len(pieces)
    scores = [0.0] * 261 + [-float(i) for i in range(len(pieces))]
    tokens += list(extra)  # user-defined tokens (FIM, thinking tags): matched whole by the tokenizer
    types += [4] * len(extra)
    scores += [0.0] * len(extra)
    return tokens, scores, types


def add_vocabulary(w: gguf.GGUFWriter, extra: tuple[str, ...] = ()) -> int:
    """The tiny SentencePiece-style vocabulary and its special tokens; returns its size."""
    tokens, scores, types = vocabulary(extra)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    return len(tokens)


def q4k_blocks(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Random Q4_K weights as raw blocks (per 256 values: f16 scale and min, 12 bytes of sub-block
    scales, 128 bytes of nibbles), small enough that activations stay finite."""
    blocks = rng.integers(0, 256, size=(rows, cols // 256, 144), dtype=np.uint8)
    blocks[:, :, 0:2] = np.frombuffer(np.float16(0.002).tobytes(), np.uint8)
    blocks[:, :, 2:4] = np.frombuffer(np.float16(0.001).tobytes(), np.uint8)
    return blocks.reshape(rows, -1)


FIM_TOKENS = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")


def write_tiny_llama(
    path: Path,
    seed: int = 0,
    chat_template: str | None = CHATML,
    n_ctx: int = 2048,
    q4k: bool = False,
    fim: bool = False,
    merged: dict[str, np.ndarray] | None = None,
) -> Path:
    """The tiny model; ``q4k``: wider (256) with Q4_K attention and feed-forward weights, the shapes
    that take llama.cpp's quantized matrix kernels (AMX, repacking) as a real Q4_K_M model does;
    ``fim``: with fill-in-the-middle tokens; ``merged``: with these tensors added to its weights (a
    LoRA adapter's product, ``write_tiny_lora``)."""
    rng = np.random.default_rng(seed)
    n_embd, n_ff, n_head, n_head_kv, n_layer = (256, 512, 4, 4, 1) if q4k else (64, 128, 4, 2, 2)
    head_dim = n_embd // n_head
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_size_label("1M")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(15 if q4k else 0)  # 15: mostly Q4_K_M
    n_vocab = add_vocabulary(w, FIM_TOKENS if fim else ())
    if fim:
        for key, token in zip(("pre", "suf", "mid"), FIM_TOKENS, strict=True):
            w.add_uint32(f"tokenizer.ggml.fim_{key}_token_id", vocabulary(FIM_TOKENS)[0].index(token))
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    if chat_template:
        w.add_chat_template(chat_template)

    def t(name: str, *shape: int, scale: float = 0.2) -> None:
        if q4k and not name.startswith("token_embd"):
            w.add_tensor(name, q4k_blocks(rng, *shape), raw_dtype=gguf.GGMLQuantizationType.Q4_K)
        else:
            weight = (rng.standard_normal(shape) * scale).astype(np.float32)
            w.add_tensor(name, weight + (merged or {}).get(name, np.float32(0)))

    t("token_embd.weight", n_vocab, n_embd, scale=1.0)
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    output = (rng.standard_normal((n_vocab, n_embd)) * 0.5).astype(np.float32)
    output[:5] = 0.0  # special tokens: rarely chosen, so generations run to their limit
    output[5:261] *= 0.2  # byte tokens: less likely than words
    w.add_tensor("output.weight", output)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        t(f"blk.{i}.attn_q.weight", n_embd, n_embd)
        t(f"blk.{i}.attn_k.weight", n_head_kv * head_dim, n_embd)
        t(f"blk.{i}.attn_v.weight", n_head_kv * head_dim, n_embd)
        t(f"blk.{i}.attn_output.weight", n_embd, n_embd)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        t(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        t(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_tiny_lora(
    path: Path, seed: int = 0, rank: int = 4, alpha: float = 8.0, architecture: str = "llama"
) -> tuple[Path, dict[str, np.ndarray]]:
    """A LoRA adapter for the tiny llama (``write_tiny_llama``'s default shapes) on its query and value
    projections, as llama.cpp's convert_lora_to_gguf writes one; and what it adds to each weight
    (alpha / rank * B @ A), for a merged model to compare with."""
    rng = np.random.default_rng(1000 + seed)
    w = gguf.GGUFWriter(str(path), architecture)
    w.add_type("adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", alpha)
    deltas = {}
    for i in range(2):
        for name, rows in (("attn_q", 64), ("attn_v", 32)):
            a = (rng.standard_normal((rank, 64)) * 0.3).astype(np.float32)  # ggml [n_in, rank]
            b = (rng.standard_normal((rows, rank)) * 0.3).astype(np.float32)  # ggml [rank, n_out]
            w.add_tensor(f"blk.{i}.{name}.weight.lora_a", a)
            w.add_tensor(f"blk.{i}.{name}.weight.lora_b", b)
            deltas[f"blk.{i}.{name}.weight"] = (alpha / rank * (b @ a)).astype(np.float32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, deltas


def write_tiny_gemma3(path: Path, seed: int = 0, window: int = 4) -> Path:
    """A tiny random Gemma 3: seven layers (the sixth global, the rest sliding over ``window`` keys),
    head width 32 apart from the model width, per-head query/key norms, post-norms, tied output."""
    rng = np.random.default_rng(seed)
    n_embd, n_ff, n_head, n_head_kv, head_dim, n_layer = 64, 128, 4, 2, 32, 7
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_name("tiny-gemma3")
    for key, value in {
        "context_length": 2048,
        "embedding_length": n_embd,
        "block_count": n_layer,
        "feed_forward_length": n_ff,
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
        "attention.key_length": head_dim,
        "attention.value_length": head_dim,
        "attention.sliding_window": window,
    }.items():
        w.add_uint32(f"gemma3.{key}", value)
    w.add_float32("gemma3.attention.layer_norm_rms_epsilon", 1e-6)
    w.add_float32("gemma3.rope.freq_base", 1_000_000.0)
    w.add_file_type(0)
    n_vocab = add_vocabulary(w)

    def t(name: str, *shape: int, scale: float = 0.2) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    def norm(name: str, n: int) -> None:
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    t("token_embd.weight", n_vocab, n_embd, scale=0.3)
    norm("output_norm.weight", n_embd)
    for i in range(n_layer):
        p = f"blk.{i}."
        norm(p + "attn_norm.weight", n_embd)
        t(p + "attn_q.weight", n_head * head_dim, n_embd)
        t(p + "attn_k.weight", n_head_kv * head_dim, n_embd)
        t(p + "attn_v.weight", n_head_kv * head_dim, n_embd)
        norm(p + "attn_q_norm.weight", head_dim)
        norm(p + "attn_k_norm.weight", head_dim)
        t(p + "attn_output.weight", n_embd, n_head * head_dim)
        norm(p + "post_attention_norm.weight", n_embd)
        norm(p + "ffn_norm.weight", n_embd)
        t(p + "ffn_gate.weight", n_ff, n_embd)
        t(p + "ffn_up.weight", n_ff, n_embd)
        t(p + "ffn_down.weight", n_embd, n_ff)
        norm(p + "post_ffw_norm.weight", n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_tiny_bert(
    path: Path, seed: int = 0, n_ctx: int = 64, pooling: gguf.PoolingType | None = gguf.PoolingType.MEAN
) -> Path:
    """A tiny random BERT embedding model (llama.cpp's ``bert`` arch, WordPiece vocabulary): 32 wide,
    two layers, a ``n_ctx`` token window; ``pooling`` None leaves ``bert.pooling_type`` out."""
    rng = np.random.default_rng(seed)
    n_embd, n_ff, n_head, n_layer = 32, 64, 2, 2
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    # WordPiece as llama.cpp stores it: a word's first piece has the phantom space, continuations not
    tokens = BERT_SPECIALS + ["▁" + w for w in WORDS] + ["▁" + c for c in letters] + letters
    tokens += ["▁.", "▁,", "▁!", "▁?"]
    types = [3] * len(BERT_SPECIALS) + [1] * (len(tokens) - len(BERT_SPECIALS))
    w = gguf.GGUFWriter(str(path), "bert")
    w.add_name("tiny-bert")
    w.add_context_length(n_ctx)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_layer_norm_eps(1e-12)
    w.add_causal_attention(False)
    if pooling is not None:
        w.add_pooling_type(pooling)
    w.add_file_type(0)
    w.add_tokenizer_model("bert")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_type_count(2)
    w.add_pad_token_id(0)
    w.add_unk_token_id(1)
    w.add_bos_token_id(2)  # [CLS]
    w.add_sep_token_id(3)
    w.add_mask_token_id(4)

    def t(name: str, *shape: int, scale: float = 0.2) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * scale).astype(np.float32))

    def norm(name: str) -> None:
        w.add_tensor(name + ".weight", (1.0 + 0.1 * rng.standard_normal(n_embd)).astype(np.float32))
        w.add_tensor(name + ".bias", (0.1 * rng.standard_normal(n_embd)).astype(np.float32))

    t("token_embd.weight", len(tokens), n_embd, scale=1.0)
    t("token_types.weight", 2, n_embd)
    t("position_embd.weight", n_ctx, n_embd)
    norm("token_embd_norm")
    for i in range(n_layer):
        p = f"blk.{i}."
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            t(p + name + ".weight", n_embd, n_embd)
            t(p + name + ".bias", n_embd, scale=0.05)
        norm(p + "attn_output_norm")
        t(p + "ffn_up.weight", n_ff, n_embd)
        t(p + "ffn_up.bias", n_ff, scale=0.05)
        t(p + "ffn_down.weight", n_embd, n_ff)
        t(p + "ffn_down.bias", n_embd, scale=0.05)
        norm(p + "layer_output_norm")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_tiny_projector(path: Path, n_embd: int = 64, seed: int = 0) -> Path:
    """A tiny random LLaVA projector (an mmproj GGUF, architecture "clip") for a text model of width
    ``n_embd``: a 2-layer ViT over 28×28 images in 14×14 patches, so each image is 4 embeddings."""
    return write_projector(path, n_embd, seed=seed)


def write_projector(
    path: Path,
    n_embd: int,
    width: int = 32,
    ff: int = 64,
    layers: int = 2,
    heads: int = 2,
    image: int = 28,
    patch: int = 14,
    f16: bool = False,
    std: float | None = 0.5,
    seed: int = 0,
) -> Path:
    """A random LLaVA projector of any ViT's shape (``f16``: its matrices in f16, as mmproj files ship;
    ``std`` of every value, None: a matrix's is 1/√fan-in, so that deep stacks stay finite)."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "clip")
    w.add_string("clip.projector_type", "mlp")
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.use_gelu", True)
    for key, value in (
        ("embedding_length", width),
        ("feed_forward_length", ff),
        ("block_count", layers),
        ("projection_dim", n_embd),
        ("attention.head_count", heads),
        ("image_size", image),
        ("patch_size", patch),
    ):
        w.add_uint32(f"clip.vision.{key}", value)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    w.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])

    def tensor(name: str, *shape: int) -> None:  # numpy order: the last axis is ggml's first
        scale = std if std is not None else 0.5 if len(shape) == 1 else shape[-1] ** -0.5
        values = rng.standard_normal(shape, dtype=np.float32) * scale
        w.add_tensor(name, values.astype(np.float16 if f16 and len(shape) > 1 else np.float32))

    tensor("v.class_embd", width)
    tensor("v.patch_embd.weight", width, 3, patch, patch)
    tensor("v.position_embd.weight", (image // patch) ** 2 + 1, width)
    tensor("v.pre_ln.weight", width)
    tensor("v.pre_ln.bias", width)
    for i in range(layers):
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensor(f"v.blk.{i}.{part}.weight", width, width)
            tensor(f"v.blk.{i}.{part}.bias", width)
        for norm in ("ln1", "ln2"):
            tensor(f"v.blk.{i}.{norm}.weight", width)
            tensor(f"v.blk.{i}.{norm}.bias", width)
        tensor(f"v.blk.{i}.ffn_up.weight", ff, width)
        tensor(f"v.blk.{i}.ffn_up.bias", ff)
        tensor(f"v.blk.{i}.ffn_down.weight", width, ff)
        tensor(f"v.blk.{i}.ffn_down.bias", width)
    tensor("mm.0.weight", n_embd, width)
    tensor("mm.0.bias", n_embd)
    tensor("mm.2.weight", n_embd, n_embd)
    tensor("mm.2.bias", n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def png(pixels: np.ndarray) -> bytes:
    """An RGB image (height × width × 3, uint8) as a PNG file's bytes."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(np.uint8).tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


# How byte-level BPE tokenizers split text before merging (Hugging Face pre-tokenizers); the
# converter must find llama.cpp's equivalent for each
PRE_TOKENIZERS = ("llama3", "qwen2", "gpt4o", "tekken", "smollm", "gpt2", "spm")
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# GPT-4o's o200k splitting (Phi-4), and Mistral's Tekken: a word's capitals, then its small letters
_GPT4O = (
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_TEKKEN = _GPT4O.replace(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?", "").replace(r"\p{N}{1,3}", r"\p{N}")
HF_CORPUS = [
    "The capital of France is Paris. The cat sat on the mat.",
    "Hello world! 12345 numbers in 2026, don't they'll we've.",
    "def f(x):\n    return x * 2\n\n\tindented — ünïcödé 日本語",
] * 20


def write_tiny_hf(
    folder: Path,
    arch: str = "llama",
    dtype: str = "float32",
    pre: str = "llama3",
    seed: int = 0,
    **config: object,
) -> Path:
    """A tiny random Hugging Face causal LM folder (safetensors, a trained byte-level BPE tokenizer, or
    with ``pre="spm"`` a SentencePiece one, or a folder's, a chat template), as ``save_pretrained``
    writes it.
    ``arch``: llama, mistral, qwen2, qwen3, phi3, mixtral, qwen3moe, gemma2, gemma3."""
    import transformers
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if Path(pre).is_dir():  # another model's tokenizer (a real one, which llama.cpp's converter knows)
        fast = transformers.AutoTokenizer.from_pretrained(pre)
        return _tiny_hf_model(folder, fast, arch, dtype, seed, config)
    if pre == "spm":
        fast = transformers.PreTrainedTokenizerFast(
            tokenizer_object=spm_tokenizer(folder), bos_token="<s>", eos_token="</s>", unk_token="<unk>"
        )
        return _tiny_hf_model(
            folder, fast, arch, dtype, seed, {"bos_token_id": 1, "eos_token_id": 2, **config}
        )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=pre in ("smollm", "gpt2"))
    split = {
        "llama3": [pre_tokenizers.Split(Regex(_LLAMA3), behavior="isolated")],
        "qwen2": [pre_tokenizers.Split(Regex(_LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")), behavior="isolated")],
        "gpt4o": [pre_tokenizers.Split(Regex(_GPT4O), behavior="isolated")],
        "tekken": [pre_tokenizers.Split(Regex(_GPT4O_TEKKEN), behavior="isolated")],
        "smollm": [pre_tokenizers.Digits(individual_digits=True)],
        "gpt2": [],
    }[pre]
    tokenizer = Tokenizer(models.BPE(ignore_merges=pre in ("llama3", "tekken")))  # (as theirs)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([*split, byte_level]) if split else byte_level
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(HF_CORPUS, trainer)
    if pre == "llama3":  # as Llama 3's: encoding starts with the BOS token
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B", special_tokens=[("<|bos|>", 0)]
        )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<|bos|>", eos_token="<|im_end|>"
    )
    return _tiny_hf_model(folder, fast, arch, dtype, seed, config)


def _tiny_hf_model(
    folder: Path, fast: object, arch: str, dtype: str, seed: int, config: dict[str, object]
) -> Path:
    import torch
    import transformers

    config = dict(config)
    shard = config.pop("max_shard_size", None)  # several safetensors files and their index
    fast.chat_template = CHATML  # type: ignore[attr-defined]
    fast.save_pretrained(folder)  # type: ignore[attr-defined]
    settings: dict[str, object] = {
        "vocab_size": len(fast),  # type: ignore[arg-type]
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "bos_token_id": 0,
        "eos_token_id": 3,
        "pad_token_id": 0,
        "tie_word_embeddings": False,
        "initializer_range": 0.1,  # livelier than the default: logits far enough apart to compare
        **config,
    }
    kind = {
        "llama": "LlamaConfig",
        "mistral": "MistralConfig",
        "qwen2": "Qwen2Config",
        "phi3": "Phi3Config",
        "mixtral": "MixtralConfig",
        "qwen3moe": "Qwen3MoeConfig",
        "gemma2": "Gemma2Config",
        "gemma3": "Gemma3TextConfig",
        "qwen3": "Qwen3Config",
    }
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, kind[arch])(**settings))
    with torch.no_grad():  # decisive routers: rounding never swaps which experts a token takes
        for name, weight in model.named_parameters():
            if name.endswith(("mlp.gate.weight", "block_sparse_moe.gate.weight")):
                weight.mul_(30)
    model.to(getattr(torch, dtype)).save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
    return folder


# SmolLM2's own tokenizer.json splits digits one by one before its byte-level BPE (llama.cpp's "smollm");
# transformers, rebuilding a tokenizer from a GGUF, writes a plain byte-level one
_SMOLLM_PRE = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
}
_GEMMA3_NAMES = {  # Gemma 3's four norms a layer, and its q/k norms
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
}
_HF_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def write_hf_from_gguf(source: Path, folder: Path) -> Path:
    """A Llama (SmolLM2's) or Gemma 3 GGUF as the Hugging Face folder it was made from: weights
    dequantized to F16 safetensors under Hugging Face's names (Llama's q/k rows back in halves, Gemma's
    norms back without the 1 llama.cpp's converter adds), config.json, and the tokenizer with its chat
    template."""
    import json

    from safetensors.numpy import save_file
    from transformers import AutoTokenizer

    reader = gguf.GGUFReader(source)

    def value(key: str) -> Any:
        return reader.fields[key].contents()

    arch = value("general.architecture")
    gemma = arch == "gemma3"
    heads, kv_heads = (
        int(value(f"{arch}.attention.head_count")),
        int(value(f"{arch}.attention.head_count_kv")),
    )
    names = _HF_NAMES | (_GEMMA3_NAMES if gemma else {})
    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        base, _, suffix = t.name.rpartition(".")
        shape = tuple(reversed([int(x) for x in t.shape]))
        data = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        if gemma and base.endswith("norm"):
            data = data - 1
        if base.startswith("blk."):
            _, layer, kind = base.split(".")
            if kind in ("attn_q", "attn_k") and not gemma:  # llama.cpp's interleaved RoPE pairs to halves
                n = heads if kind == "attn_q" else kv_heads
                data = data.reshape(n, shape[0] // n // 2, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)
            name = f"model.layers.{layer}.{names[kind]}.{suffix}"
        else:
            top = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
            name = f"{top[base]}.{suffix}"
        tensors[name] = np.ascontiguousarray(data.astype(np.float16 if data.ndim > 1 else np.float32))
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["Gemma3ForCausalLM" if gemma else "LlamaForCausalLM"],
        "model_type": "gemma3_text" if gemma else "llama",
        "vocab_size": tensors["model.embed_tokens.weight"].shape[0],
        "hidden_size": value(f"{arch}.embedding_length"),
        "intermediate_size": value(f"{arch}.feed_forward_length"),
        "num_hidden_layers": value(f"{arch}.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": value(f"{arch}.attention.layer_norm_rms_epsilon"),
        "rope_theta": value(f"{arch}.rope.freq_base"),
        "max_position_embeddings": value(f"{arch}.context_length"),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "bos_token_id": value("tokenizer.ggml.bos_token_id"),
        "eos_token_id": value("tokenizer.ggml.eos_token_id"),
        "hidden_act": "silu",
    }
    if gemma:
        head_dim = int(value("gemma3.attention.key_length"))
        config |= {
            "head_dim": head_dim,
            "query_pre_attn_scalar": head_dim,
            "sliding_window": value("gemma3.attention.sliding_window"),
            "rope_local_base_freq": 10000.0,
            "hidden_activation": "gelu_pytorch_tanh",
            "pad_token_id": value("tokenizer.ggml.padding_token_id"),
        }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    if "tokenizer.chat_template" in reader.fields:
        tokenizer.chat_template = value("tokenizer.chat_template")
    tokenizer.save_pretrained(folder)
    if not gemma:
        saved = json.loads((folder / "tokenizer.json").read_text())
        (folder / "tokenizer.json").write_text(json.dumps({**saved, "pre_tokenizer": _SMOLLM_PRE}))
    return folder


def write_tiny_peft(
    model: Path, adapter: Path, merged: Path, rank: int = 4, alpha: float = 8.0, rslora: bool = False
) -> None:
    """A random PEFT LoRA adapter over every projection of the F32 Hugging Face folder ``model`` (as
    PEFT saves one), and ``merged``: the model with the adapter's product added to its weights."""
    import json
    import math
    import shutil

    from safetensors.numpy import load_file, save_file

    weights = load_file(str(model / "model.safetensors"))
    targets = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "qkv_proj",
        "gate_up_proj",
    )
    rng = np.random.default_rng(1)
    scale = alpha / (math.sqrt(rank) if rslora else rank)
    pairs: dict[str, np.ndarray] = {}
    for name, weight in list(weights.items()):
        if name.removesuffix(".weight").rsplit(".", 1)[-1] in targets:
            out_dim, in_dim = weight.shape
            a = (rng.standard_normal((rank, in_dim)) * 0.1).astype(np.float32)
            b = (rng.standard_normal((out_dim, rank)) * 0.1).astype(np.float32)
            pairs[f"base_model.model.{name.removesuffix('.weight')}.lora_A.weight"] = a
            pairs[f"base_model.model.{name.removesuffix('.weight')}.lora_B.weight"] = b
            weights[name] = (weight + scale * (b @ a)).astype(np.float32)
    adapter.mkdir(parents=True)
    save_file(pairs, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": alpha,
        "use_rslora": rslora,
        "target_modules": list(targets),
    }
    (adapter / "adapter_config.json").write_text(json.dumps(config | {"base_model_name_or_path": str(model)}))
    shutil.copytree(model, merged)
    save_file(weights, str(merged / "model.safetensors"), metadata={"format": "pt"})


def spm_tokenizer(folder: Path) -> object:
    """A SentencePiece BPE model with byte fallback trained on HF_CORPUS (``tokenizer.model`` in
    ``folder``, as Llama 2's and Mistral's repositories ship it), and the tokenizers ``Tokenizer`` that
    transformers makes of such a model: every split of a piece into two pieces a merge, ranked by the
    piece's score; "▁" for spaces and before the text; bytes for what the vocabulary lacks."""
    import sentencepiece
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    folder.mkdir(parents=True, exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(HF_CORPUS),
        model_prefix=str(folder / "tokenizer"),
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        split_digits=True,
        character_coverage=1.0,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        minloglevel=2,
    )
    (folder / "tokenizer.vocab").unlink()
    sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    merges = sorted(
        (
            (piece[:k], piece[k:])
            for piece in vocab
            for k in range(1, len(piece))
            if piece[:k] in vocab and piece[k:] in vocab
        ),
        key=lambda m: (vocab[m[0] + m[1]], vocab[m[0]], vocab[m[1]]),
    )
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tokenizer.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>")]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return tokenizer


def write_tiny_gguf_from_hf(path: Path, arch: str, seed: int = 0, **config: object) -> Path:
    """A tiny random model of a Hugging Face architecture (``write_tiny_hf``'s) as the GGUF that
    ``create`` makes of it: Qwen2, Qwen3, Llama 3 with its RoPE frequency factors..."""
    from ferrousforge_host.models.safetensors_gguf import convert

    folder = path.with_suffix(".hf")
    write_tiny_hf(folder, arch, seed=seed, **config)  # type: ignore[arg-type]
    convert(folder, path)
    return path
