"""Ollama's ``create`` from a safetensors folder: a Hugging Face causal language model (Llama, Mistral,
Qwen2, Qwen3) written as a GGUF that llama.cpp runs, with its tokenizer (byte-level BPE, or
SentencePiece BPE with byte fallback), special tokens and chat template. Weights keep their precision
(BF16 stays BF16, F16 stays F16, F32 becomes F16; norms and biases F32, as llama.cpp's own converter
writes them); ``create --quantize`` then applies. A PEFT LoRA adapter folder (Modelfile
``ADAPTER ./folder``) becomes a GGUF LoRA adapter for the model.

The weights are read straight from the files' bytes (numpy has no bfloat16, so the safetensors
library cannot hand BF16 to numpy) and written one tensor at a time: memory stays at one tensor.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import gguf
import numpy as np

from ferrousforge.errors import BadRequest
from ferrousforge_host.store import BlobStore

# What Hugging Face names the architecture → llama.cpp's, and whether q/k rows are re-ordered: llama.cpp's
# "llama" applies RoPE to interleaved pairs, Hugging Face's Llama to halves (the others: halves in both)
ARCHITECTURES: dict[str, tuple[gguf.MODEL_ARCH, bool]] = {
    "LlamaForCausalLM": (gguf.MODEL_ARCH.LLAMA, True),
    "MistralForCausalLM": (gguf.MODEL_ARCH.LLAMA, True),
    "Qwen2ForCausalLM": (gguf.MODEL_ARCH.QWEN2, False),
    "Qwen3ForCausalLM": (gguf.MODEL_ARCH.QWEN3, False),
    "Phi3ForCausalLM": (gguf.MODEL_ARCH.PHI3, False),
    "MixtralForCausalLM": (gguf.MODEL_ARCH.LLAMA, True),
    "Qwen3MoeForCausalLM": (gguf.MODEL_ARCH.QWEN3MOE, False),
    "Gemma2ForCausalLM": (gguf.MODEL_ARCH.GEMMA2, False),
    "Gemma3ForCausalLM": (gguf.MODEL_ARCH.GEMMA3, False),
    "Gemma3ForConditionalGeneration": (gguf.MODEL_ARCH.GEMMA3, False),  # its language model: text only
}
# a multimodal checkpoint's language model under the names of a text-only one; its vision part left out
_LANGUAGE_MODEL = (("language_model.model.", "model."), ("model.language_model.", "model."),
                   ("language_model.lm_head.", "lm_head."))  # fmt: skip
_VISION = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")
# the files a folder's model is made of (what ``ferrousforge create`` uploads from a FROM folder)
FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "model.safetensors.index.json",
    # an encoder's (converted to ONNX instead): sentence-transformers' pooling and normalisation
    "modules.json",
    "1_Pooling/config.json",
    "sentence_bert_config.json",
)
_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}  # BF16 kept as its raw bits
_SKIPPED = ("rotary_emb.inv_freq",)  # buffers some checkpoints carry; llama.cpp computes them

# Hugging Face pre-tokenizer regexes → the llama.cpp pre-tokenizer that splits text the same way
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = _LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
_CASED = (  # a word: its capitals, then its small letters (GPT-4o's o200k, Mistral's Tekken)
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+<S>"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*<S>"
    r"|<N>| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O = _CASED.replace("<S>", r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?").replace("<N>", r"\p{N}{1,3}")  # Phi-4
_TEKKEN = _CASED.replace("<S>", "").replace("<N>", r"\p{N}")  # Mistral Nemo, Ministral, Mistral Small 3
_SPLITS = {_LLAMA3: "llama-bpe", _QWEN2: "qwen2", _GPT4O: "gpt-4o", _TEKKEN: "tekken"}


@dataclass(frozen=True)
class Tensor:
    """One tensor of a safetensors file, located but not read."""

    path: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    def read(self) -> np.ndarray:
        count = self.end - self.start
        raw = np.memmap(self.path, dtype=np.uint8, mode="r", offset=self.start, shape=(count,))
        return np.asarray(raw).view(_DTYPES[self.dtype]).reshape(self.shape)


@dataclass(frozen=True)
class Stacked:
    """A mixture-of-experts layer's experts' weights of one kind, as the one tensor llama.cpp reads."""

    parts: tuple[Tensor, ...]

    @property
    def dtype(self) -> str:
        return self.parts[0].dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.parts), *self.parts[0].shape)

    def read(self) -> np.ndarray:
        return np.stack([part.read() for part in self.parts])


_EXPERT = re.compile(r"^(.*\.experts)\.(\d+)\.(\w+)\.weight$")


def _stacked(tensors: dict[str, Tensor]) -> dict[str, Tensor | Stacked]:
    """The tensors, each layer's experts stacked by kind (``...experts.gate_proj.weight``)."""
    out: dict[str, Tensor | Stacked] = {}
    experts: dict[str, dict[int, Tensor]] = {}
    for name, tensor in tensors.items():
        if match := _EXPERT.match(name):
            experts.setdefault(f"{match[1]}.{match[3]}.weight", {})[int(match[2])] = tensor
        else:
            out[name] = tensor
    for name, parts in experts.items():
        if sorted(parts) != list(range(len(parts))) or len({p.shape for p in parts.values()}) != 1:
            raise BadRequest(f"the experts of {name} are not numbered 0 to {len(parts) - 1} and of one shape")
        out[name] = Stacked(tuple(parts[i] for i in range(len(parts))))
    return out


@dataclass(frozen=True)
class Converted:
    architecture: str
    file_type: str
    parameters: int
    tokenizer: str
    left_out: int = 0  # tensors of a vision tower and projector (the model converts as text only)


def read_tensors(folder: Path) -> dict[str, Tensor]:
    """Every tensor of the folder's ``*.safetensors`` files (sharded or not), from their headers."""
    tensors: dict[str, Tensor] = {}
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise BadRequest("the model folder has no .safetensors file")
    for path in files:
        with path.open("rb") as f:
            try:
                (length,) = struct.unpack("<Q", f.read(8))
                if length > path.stat().st_size - 8:
                    raise ValueError(f"a header of {length} bytes")
                header = json.loads(f.read(length))
            except (struct.error, ValueError) as exc:
                raise BadRequest(f"{path.name} is not a safetensors file: {exc}") from None
        base = 8 + length
        if not isinstance(header, dict):
            raise BadRequest(f"{path.name} is not a safetensors file: its header is no object")
        for name, info in header.items():
            if name != "__metadata__":
                tensors[name] = _located(path, name, info, base)
    return tensors


def _language_model(tensors: dict[str, Tensor]) -> tuple[dict[str, Tensor], int]:
    """The language model's tensors under text-only names; how many vision tensors were left out."""
    kept: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        if name.startswith(_VISION):
            continue
        for prefix, plain in _LANGUAGE_MODEL:
            if name.startswith(prefix):
                name = plain + name.removeprefix(prefix)
        kept[name] = tensor
    return kept, len(tensors) - len(kept)


def _located(path: Path, name: str, info: Any, base: int) -> Tensor:
    """A tensor's entry in a safetensors header, checked against its shape and the file's size."""
    try:
        dtype, (start, end), shape = info["dtype"], info["data_offsets"], tuple(int(d) for d in info["shape"])
    except (TypeError, KeyError, ValueError):
        raise BadRequest(f"{path.name}: tensor {name} has no dtype, data_offsets and shape") from None
    if dtype not in _DTYPES:
        raise BadRequest(f"{path.name}: tensor {name} is {dtype}; F32, F16 or BF16 expected")
    size = math.prod(shape) * np.dtype(_DTYPES[dtype]).itemsize
    if end - start != size or start < 0 or base + end > path.stat().st_size:
        raise BadRequest(f"{path.name}: tensor {name}'s bytes do not match its shape, or lie past the end")
    return Tensor(path, dtype, shape, base + start, base + end)


def read_config(folder: Path) -> dict[str, Any]:
    if not (folder / "config.json").is_file():
        raise BadRequest("the model folder has no config.json")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise BadRequest(f"config.json: {exc}") from None
    return dict(config.get("text_config", {}), **config) if "text_config" in config else config


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings wherever this transformers version put them (``rope_parameters`` or the old keys)."""
    rope = dict(config.get("rope_scaling") or {})
    given = config.get("rope_parameters") or {}
    rope.update(given.get("full_attention", given))  # (Gemma 3's: per layer type; the global layers')
    rope.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    rope["rope_type"] = str(rope.get("rope_type") or rope.get("type") or "default").lower()
    return rope


def _llama3_factors(rope: dict[str, Any], head_dim: int) -> np.ndarray:
    """Llama 3.1's RoPE frequency factors (``rope_type: llama3``), which llama.cpp reads as rope_freqs."""
    base, factor = float(rope["rope_theta"]), float(rope["factor"])
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_context = float(rope.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_context / low, old_context / high
    factors = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi / (1.0 / base ** (i / head_dim))
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(factors, dtype=np.float32)


def pre_tokenizer(tokenizer: dict[str, Any]) -> str:
    """The llama.cpp pre-tokenizer that splits text as this byte-level BPE tokenizer.json does."""
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        regex = steps[0].get("pattern", {}).get("Regex")
        if regex in _SPLITS:
            return _SPLITS[regex]
    raise BadRequest(
        "the tokenizer splits text in a way llama.cpp cannot reproduce here "
        f"(pre_tokenizer {json.dumps(pre)[:200]}); known: GPT-2, SmolLM, Llama 3, Qwen2, GPT-4o and Tekken "
        "byte-level BPE"
    )


def _vocabulary(folder: Path, writer: gguf.GGUFWriter, n_vocab: int) -> tuple[str, int]:
    """Write the vocabulary (``n_vocab`` tokens at least), merges or scores, special tokens and chat
    template; its pre-tokenizer and size."""
    if not (folder / "tokenizer.json").is_file():
        raise BadRequest(
            "the model folder has no tokenizer.json (a SentencePiece tokenizer.model alone does not convert)"
        )
    try:
        tokenizer = json.loads((folder / "tokenizer.json").read_text())
    except (OSError, ValueError) as exc:
        raise BadRequest(f"tokenizer.json: {exc}") from None
    model = tokenizer.get("model") or {}
    decoder = (tokenizer.get("decoder") or {}).get("type")
    if model.get("type") == "BPE" and decoder == "ByteLevel":
        pre = pre_tokenizer(tokenizer)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
    elif model.get("type") == "BPE" and model.get("byte_fallback"):
        pre = "sentencepiece"  # (llama.cpp splits no text before a SentencePiece vocabulary's merges)
        writer.add_tokenizer_model("llama")
        writer.add_add_space_prefix(_prepends_space(tokenizer))
    else:
        raise BadRequest(
            "only BPE tokenizers convert here: byte-level (Llama 3, Qwen, SmolLM, GPT-2) or SentencePiece "
            f"with byte fallback (Llama 2, Mistral); this tokenizer.json has a {model.get('type')} model "
            f"with a {decoder} decoder"
        )
    unk = model.get("unk_token")
    ids: dict[int, tuple[str, int]] = {}
    for text, i in model["vocab"].items():
        byte = pre == "sentencepiece" and len(text) == 6 and text.startswith("<0x") and text.endswith(">")
        ids[i] = (
            text,
            gguf.TokenType.BYTE if byte else gguf.TokenType.UNKNOWN if text == unk else gguf.TokenType.NORMAL,
        )
    for added in tokenizer.get("added_tokens", []):
        if added["content"] == unk:
            continue
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        ids[added["id"]] = (added["content"], kind)
    size = max(n_vocab, max(ids) + 1)
    tokens = [ids.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED)) for i in range(size)]
    writer.add_token_list([t for t, _ in tokens])
    writer.add_token_types([k for _, k in tokens])
    if pre == "sentencepiece":  # llama.cpp merges by score: the rank of the merge making each piece
        writer.add_token_scores(_merge_scores(model.get("merges") or [], tokens))
    special = gguf.SpecialVocab(folder, load_merges=pre != "sentencepiece", n_vocab=size)
    special.add_special_token["bos"] = _adds_bos(tokenizer, folder)
    special.add_to_gguf(writer, quiet=True)
    writer.add_vocab_size(size)
    return pre, size


def _merge_scores(merges: list[Any], tokens: list[tuple[str, int]]) -> list[float]:
    """Scores that make llama.cpp's SentencePiece merging pick what the tokenizer's BPE merges pick:
    each piece scored by the rank of the first merge that makes it (as transformers ranks the merges it
    makes of a SentencePiece model by the pieces' scores); pieces no merge makes, below all."""
    rank: dict[str, int] = {}
    for r, merge in enumerate(merges):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, r)
    unmade = -float(len(merges) + 1)
    normal = gguf.TokenType.NORMAL
    return [(-float(rank[t]) if t in rank else unmade) if k == normal else 0.0 for t, k in tokens]


def _prepends_space(tokenizer: dict[str, Any]) -> bool:
    """Whether a SentencePiece-style tokenizer puts "▁" before the text (Llama 2's normalizer, or a
    Metaspace pre-tokenizer prepending to the first word)."""
    for part in ("normalizer", "pre_tokenizer"):
        step = tokenizer.get(part) or {}
        for s in step.get("normalizers", step.get("pretokenizers", [step])):
            if s.get("type") == "Prepend" or (
                s.get("type") == "Metaspace" and s.get("prepend_scheme", "always") != "never"
            ):
                return True
    return False


def _adds_bos(tokenizer: dict[str, Any], folder: Path) -> bool:
    """Whether encoding puts a BOS token first: the tokenizer's template says (Llama 3's does), else
    tokenizer_config.json's ``add_bos_token``; said always, lest llama.cpp guess by pre-tokenizer."""
    post = tokenizer.get("post_processor") or {}
    for step in post.get("processors", [post]):
        if step.get("type") == "TemplateProcessing":
            single = step.get("single") or []
            return len(single) > 1 and "SpecialToken" in single[0]
    try:
        config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return False
    return config.get("add_bos_token") is True


def _outputs(
    tensors: dict[str, Tensor | Stacked], arch: gguf.MODEL_ARCH, permute: bool, config: dict[str, Any]
) -> Iterator[tuple[str, Tensor | Stacked, str]]:
    """(GGUF name, source tensor, what to do with it) for each weight; 400 on a tensor of no known use."""
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    for name in tensors:
        if name.endswith(_SKIPPED):
            continue
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise BadRequest(f"tensor {name} has no place in llama.cpp's {arch.name.lower()} model")
        action = "keep"
        if permute and name.endswith(("q_proj.weight", "q_proj.bias")):
            action = "permute_q"
        elif permute and name.endswith(("k_proj.weight", "k_proj.bias")):
            action = "permute_k"
        yield target, tensors[name], action


def _in_f32(target: str, shape: tuple[int, ...]) -> bool:
    """What llama.cpp's converter keeps in F32: norms, biases, and a mixture of experts' router."""
    return len(shape) <= 1 or target.endswith(("_norm.weight", "ffn_gate_inp.weight"))


def _prepared(
    tensor: Tensor | Stacked, target: str, action: str, config: dict[str, Any], rows: int | None, shift: float
) -> np.ndarray:
    data = tensor.read()[:rows]
    if action != "keep":
        data = _interleaved(
            data, config["num_attention_heads"] if action == "permute_q" else _kv_heads(config)
        )
    if _in_f32(target, data.shape):
        data = _widened(data, tensor.dtype)
        return data + np.float32(shift) if shift else data
    return data.astype(np.float16) if tensor.dtype == "F32" else np.ascontiguousarray(data)


def _interleaved(rows: np.ndarray, heads: int) -> np.ndarray:
    """Each head's rows from Hugging Face's halves into the interleaved pairs llama.cpp's Llama rotates."""
    shape = rows.shape
    return rows.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _widened(data: np.ndarray, dtype: str) -> np.ndarray:
    """Values as F32 (BF16's raw bits: the high half of an F32's)."""
    return (data.astype(np.uint32) << 16).view(np.float32) if dtype == "BF16" else data.astype(np.float32)


def _gemma(writer: gguf.GGUFWriter, config: dict[str, Any], arch: str, head_dim: int, width: int) -> None:
    """Gemma 2's and 3's own keys: head size, the sliding window and which layers slide (said layer by
    layer), the local layers' RoPE base (Gemma 3), logit soft-capping."""
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    if cap := config.get("attn_logit_softcapping"):
        if arch != "gemma2":
            raise BadRequest(f"attention logit soft-capping (Gemma 2's) does not convert for {arch}")
        writer.add_attn_logit_softcapping(float(cap))
    if cap := config.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(float(cap))
    layers = int(config["num_hidden_layers"])
    every = int(config.get("sliding_window_pattern", 6 if arch == "gemma3" else 2))
    kinds = config.get("layer_types") or [
        "full_attention" if (i + 1) % every == 0 else "sliding_attention" for i in range(layers)
    ]
    if "sliding_attention" in kinds:
        writer.add_sliding_window(int(config["sliding_window"]))
        key = gguf.Keys.Attention.SLIDING_WINDOW_PATTERN.format(arch=arch)
        writer.add_array(key, [kind == "sliding_attention" for kind in kinds])
    if arch == "gemma3":
        local = (config.get("rope_parameters") or {}).get("sliding_attention") or {}
        theta = local.get("rope_theta", config.get("rope_local_base_freq", 10000.0))
        writer.add_float32(gguf.Keys.Rope.FREQ_BASE_SWA.format(arch=arch), float(theta))
    # llama.cpp scales queries by 1/sqrt(head size), for the 27B models by 1/sqrt(width / heads)
    scalar = config.get("query_pre_attn_scalar")
    assumed = width if layers == {"gemma2": 46, "gemma3": 62}[arch] else head_dim
    if scalar is not None and int(scalar) != assumed:
        raise BadRequest(f"query_pre_attn_scalar {scalar} is not {assumed}, which llama.cpp assumes here")


def _longrope(
    writer: gguf.GGUFWriter, rope: dict[str, Any], config: dict[str, Any], rotary: int
) -> list[tuple[str, np.ndarray]]:
    """Phi-3's long-context RoPE: its long and short frequency factors, and the attention factor."""
    long, short = rope.get("long_factor"), rope.get("short_factor")
    if not long or not short or len(long) != len(short) or len(long) != rotary // 2:
        raise BadRequest(f"longrope needs long_factor and short_factor of {rotary // 2} values each")
    old = int(rope.get("original_max_position_embeddings") or config["original_max_position_embeddings"])
    scale = int(config["max_position_embeddings"]) / old
    writer.add_rope_scaling_orig_ctx_len(old)
    writer.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(old)) if scale > 1 else 1.0)
    names = gguf.TENSOR_NAMES
    return [
        (names[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight", np.array(long, dtype=np.float32)),
        (names[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight", np.array(short, dtype=np.float32)),
    ]


def _experts(writer: gguf.GGUFWriter, config: dict[str, Any], count: int) -> None:
    writer.add_expert_count(count)
    writer.add_expert_used_count(int(config["num_experts_per_tok"]))
    if width := config.get("moe_intermediate_size"):
        writer.add_expert_feed_forward_length(int(width))
    if (
        config.get("norm_topk_prob") is False
        or config.get("mlp_only_layers")
        or config.get("decoder_sparse_step", 1) != 1
    ):
        raise BadRequest(
            "llama.cpp runs mixtures of experts in every layer, their chosen weights normalized; this "
            "model has dense layers or unnormalized weights"
        )


def _kv_heads(config: dict[str, Any]) -> int:
    return int(config.get("num_key_value_heads") or config["num_attention_heads"])


def convert(folder: Path, out: Path) -> Converted:
    """Write the model in ``folder`` (config.json, *.safetensors, tokenizer.json...) as GGUF ``out``."""
    try:
        return _convert(folder, out)
    except KeyError as exc:  # a setting the architecture needs
        raise BadRequest(f"config.json has no {exc}") from None
    except (TypeError, ValueError) as exc:  # a setting of the wrong kind, a tensor of the wrong shape
        raise BadRequest(f"cannot convert the model: {exc}") from None


def _convert(folder: Path, out: Path) -> Converted:
    config = read_config(folder)
    hf_arch = next(iter(config.get("architectures") or ["?"]))
    if hf_arch not in ARCHITECTURES:
        raise BadRequest(
            f"cannot convert a {hf_arch} model; safetensors models of these architectures convert: "
            + ", ".join(ARCHITECTURES)
        )
    arch, permute = ARCHITECTURES[hf_arch]
    tensors, left_out = _language_model(read_tensors(folder))
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if not isinstance(config.get(key), int):
            raise BadRequest(f"config.json has no '{key}'")
    n_embd, n_head = config["hidden_size"], config["num_attention_heads"]
    head_dim = int(config.get("head_dim") or n_embd // n_head)
    rope = _rope(config)

    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(str(config.get("_name_or_path") or folder.name))
    writer.add_context_length(int(config.get("max_position_embeddings", 4096)))
    writer.add_embedding_length(n_embd)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(_kv_heads(config))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    rotary = int(
        float(rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))) * head_dim
    )
    writer.add_rope_dimension_count(rotary)
    gemma = arch in (gguf.MODEL_ARCH.GEMMA2, gguf.MODEL_ARCH.GEMMA3)
    if head_dim != n_embd // n_head and not gemma:  # (Gemma's are said below)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    extra: list[tuple[str, np.ndarray]] = []
    if rope["rope_type"] == "llama3":
        extra.append(
            (gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", _llama3_factors(rope, head_dim))
        )
    elif rope["rope_type"] in ("linear", "yarn"):
        kind = gguf.RopeScalingType.LINEAR if rope["rope_type"] == "linear" else gguf.RopeScalingType.YARN
        writer.add_rope_scaling_type(kind)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        if kind is gguf.RopeScalingType.YARN:
            writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    elif rope["rope_type"] in ("longrope", "su") and arch is gguf.MODEL_ARCH.PHI3:
        extra += _longrope(writer, rope, config, rotary)
    elif rope["rope_type"] != "default":
        raise BadRequest(
            f"RoPE scaling '{rope['rope_type']}' does not convert; default, linear, yarn, llama3 (and "
            "Phi-3's longrope) do"
        )
    if arch is gguf.MODEL_ARCH.PHI3:  # (llama.cpp tells Phi-3 from Phi-4 by a window of 0)
        writer.add_sliding_window(int(config.get("sliding_window") or 0))

    if gemma:
        _gemma(writer, config, gguf.MODEL_ARCH_NAMES[arch], head_dim, n_embd // n_head)
    if arch is gguf.MODEL_ARCH.GEMMA2:  # llama.cpp's Gemma 2 always ties its output to the embedding
        if "lm_head.weight" in tensors and config.get("tie_word_embeddings") is False:
            raise BadRequest(
                "this Gemma 2 has an output layer of its own; llama.cpp's ties it to the embedding"
            )
        tensors.pop("lm_head.weight", None)
    embed = tensors.get("model.embed_tokens.weight")
    n_vocab = int(config.get("vocab_size") or (embed.shape[0] if embed else 0))
    # Gemma 3's embedding has rows past its tokenizer's tokens, which llama.cpp's converter drops
    pretok, size = _vocabulary(folder, writer, 0 if gemma else n_vocab)

    experts = config.get("num_local_experts") or config.get("num_experts")
    if experts:  # a mixture of experts: how many, how many a token, each one's width
        _experts(writer, config, int(experts))
    plan = list(_outputs(_stacked(tensors), arch, permute, config))
    rows = {t: size if gemma and t in ("token_embd.weight", "output.weight") else None for t, _, _ in plan}
    shift = {t: 1.0 if gemma and t.endswith("norm.weight") else 0.0 for t, _, _ in plan}  # x * (1 + w)
    dtypes = {t.dtype for _, t, _ in plan if len(t.shape) > 1}
    file_type = "BF16" if dtypes == {"BF16"} else "F16"
    writer.add_file_type(
        gguf.LlamaFileType.MOSTLY_BF16 if file_type == "BF16" else gguf.LlamaFileType.MOSTLY_F16
    )
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for name, data in extra:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes)
    for target, tensor, _ in plan:
        flat = _in_f32(target, tensor.shape)
        kept_bf16 = tensor.dtype == "BF16" and not flat
        dtype = np.dtype(np.uint16 if kept_bf16 else np.float32 if flat else np.float16)
        shape = (min(tensor.shape[0], rows[target] or tensor.shape[0]), *tensor.shape[1:])
        raw = gguf.GGMLQuantizationType.BF16 if kept_bf16 else None
        writer.add_tensor_info(target, shape, dtype, math.prod(shape) * dtype.itemsize, raw_dtype=raw)
    writer.open_output_file()
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data in extra:
        writer.write_tensor_data(data)
    for target, tensor, action in plan:
        writer.write_tensor_data(_prepared(tensor, target, action, config, rows[target], shift[target]))
    writer.close()
    parameters = sum(math.prod(t.shape) for _, t, _ in plan)
    return Converted(gguf.MODEL_ARCH_NAMES[arch], file_type, parameters, pretok, left_out)


def is_encoder(folder: Path) -> bool:
    """Whether the folder holds a BERT encoder (made ONNX elsewhere) rather than a language model."""
    return read_config(folder).get("model_type") == "bert"


def convert_into(store: BlobStore, folder: Path) -> tuple[str, Converted]:
    """The folder's language model as a GGUF blob of ``store``, written under ``partial/`` until whole."""
    with store.scratch("convert") as target:
        made = convert(folder, target)
        return store.commit(target, None), made


@contextlib.contextmanager
def staged(store: BlobStore, files: dict[str, str]) -> Iterator[Path]:
    """The uploaded blobs as a model folder (links under the store's ``partial/``, gone afterwards)."""
    with tempfile.TemporaryDirectory(dir=store.partial, prefix="folder-") as scratch:
        tmp = Path(scratch) / "model"  # one name: the same files convert to the same bytes (general.name)
        for name, digest in files.items():
            parts = PurePosixPath(name).parts
            if not parts or name.startswith("/") or any(p in ("..", ".") or "\\" in p for p in parts):
                raise BadRequest(f"'files' names '{name}': file paths inside the model folder only")
            if not store.has_blob(digest):
                raise BadRequest(f"blob {digest} ({name}) not found: upload it with POST /api/blobs/{digest}")
            link = tmp.joinpath(*parts)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(store.blob_path(digest))
        tmp.mkdir(exist_ok=True)
        yield tmp


def convert_adapter(folder: Path, model: Path, out: Path) -> int:
    """Write the PEFT LoRA adapter in ``folder`` (adapter_config.json, adapter_model.safetensors) as a
    GGUF LoRA adapter for the GGUF ``model`` it was trained over; its number of low-rank pairs."""
    try:
        return _convert_adapter(folder, model, out)
    except KeyError as exc:
        raise BadRequest(f"adapter_config.json has no {exc}") from None
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"cannot convert the adapter: {exc}") from None


def _convert_adapter(folder: Path, model: Path, out: Path) -> int:
    from ferrousforge.gguf import read_file_metadata

    try:
        config = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise BadRequest(f"adapter_config.json: {exc}") from None
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise BadRequest(f"only LoRA adapters convert; this one is {config.get('peft_type')}")
    if config.get("use_dora"):
        raise BadRequest("DoRA adapters do not convert (llama.cpp applies plain LoRA)")
    if config.get("modules_to_save"):
        raise BadRequest(
            f"the adapter retrains whole modules ({config['modules_to_save']}); only LoRA pairs convert"
        )
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    # llama.cpp scales by alpha / rank; rsLoRA by alpha / sqrt(rank)
    alpha = alpha * math.sqrt(rank) if config.get("use_rslora") else alpha

    meta = read_file_metadata(str(model))
    arch_name = str(meta["general.architecture"])
    arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name), None)
    known = sorted({gguf.MODEL_ARCH_NAMES[a] for a, _ in ARCHITECTURES.values()})
    if arch is None or arch_name not in known:
        raise BadRequest(
            f"LoRA adapters from safetensors convert for {', '.join(known)} models; not {arch_name}"
        )
    heads = int(meta[f"{arch_name}.attention.head_count"])
    kv_heads = int(meta.get(f"{arch_name}.attention.head_count_kv", heads))
    names = gguf.get_tensor_name_map(arch, int(meta[f"{arch_name}.block_count"]))

    pairs: dict[str, dict[str, Tensor]] = {}
    for name, tensor in read_tensors(folder).items():
        base, _, part = name.removeprefix("base_model.model.").removesuffix(".weight").rpartition(".")
        if part not in ("lora_A", "lora_B"):
            raise BadRequest(f"the adapter's tensor {name} is not a LoRA lora_A or lora_B weight")
        target = names.get_name(base + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise BadRequest(f"the adapter changes {base}, which has no place in a {arch_name} model")
        pairs.setdefault(target, {})[part] = tensor
    writer = gguf.GGUFWriter(out, arch_name)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    if not pairs:
        raise BadRequest("the adapter has no LoRA weights")
    for target, pair in pairs.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise BadRequest(f"the adapter has only one of {target}'s lora_A and lora_B")
        a, b = (_widened(pair[p].read(), pair[p].dtype) for p in ("lora_A", "lora_B"))
        if arch_name == "llama" and target.endswith(
            ("attn_q.weight", "attn_k.weight")
        ):  # rows as the model's
            b = _interleaved(b, heads if "attn_q" in target else kv_heads)
        writer.add_tensor(target + ".lora_a", np.ascontiguousarray(a))
        writer.add_tensor(target + ".lora_b", np.ascontiguousarray(b))
    writer.open_output_file()
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return len(pairs)
