"""Decoder-only transformers on the GPU compute layer, reading a GGUF file directly: the ``llama``
architecture (SmolLM2, Llama 3 with its RoPE frequency factors, Mistral), ``qwen2`` (biased q/k/v,
NEOX rotation), ``qwen3`` (per-head RMSNorm of queries and keys, NEOX rotation) and ``gemma3``
(embeddings scaled by sqrt(width), per-head q/k norms, norms after attention and feed-forward, GeGLU,
sliding-window layers with their own RoPE base).

Weights are uploaded as stored and dequantized on the GPU (``ops.GGUF_BLOCKS``: F16, BF16, Q4_0 to
Q8_0, Q2_K to Q6_K, IQ4_NL, IQ4_XS). ``weights`` says how the products hold matrices: "auto" keeps
Q4_0, Q4_1 and Q4_K ones in 4 bits with a scale and a min a block of 32 (their exact values, 0.75
bytes each), Q8_0 and Q5_0 ones in 8 bits with a scale a block of 32 (their exact values, 1.125 bytes
each), the others in f16 where the adapter has shader-f16 (else f32) or, for models over
``Q8_ABOVE`` in f16, in 8 bits with a scale a block of 32 as llama.cpp's Q8_0 (a Q8_0 tensor keeps
its values, to f32 rounding); "q8" always so; "f16" in f16 (or f32) only. The KV cache lives on the GPU. A
pass over T new tokens (T > 1: a prompt, T = 1: a decode step) is recorded once per T and replayed:
token ids and positions in, logits (or with ``greedy`` only each row's argmax) out. The cache holds
``slots`` sequences of ``n_ctx`` positions each; every row of a pass names its sequence (the first
cache row of its slot), so one pass can carry the next token of several sequences
(``ferrousforge.gpu.generate`` batches them). Every kernel computes a row the same way whatever else
is in the pass, so a sequence's numbers do not depend on its batch.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

from ferrousforge.errors import ForgeError
from ferrousforge.gguf import FILE_TYPES as FILE_TYPE_NAMES
from ferrousforge.gguf import TensorInfo
from ferrousforge.gpu import ops
from ferrousforge.gpu.device import Buffer, GpuDevice, Recording

ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma3")
NEOX = frozenset(("qwen2", "qwen3", "gemma3"))  # llama.cpp's NEOX rotation: dim i pairs with i + n_rot / 2
# GGUF file types whose every tensor dequant.wgsl reads (the types llama.cpp falls back to where a
# K-quant block does not divide a row included); IQ1/IQ2/IQ3 and ternary types need the llama.cpp engine
FILE_TYPES = frozenset(
    (
        "F32",
        "F16",
        "BF16",
        "Q4_0",
        "Q4_1",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q2_K",
        "Q3_K_S",
        "Q3_K_M",
        "Q3_K_L",
        "Q4_K_S",
        "Q4_K_M",
        "Q5_K_S",
        "Q5_K_M",
        "Q6_K",
        "IQ4_NL",
        "IQ4_XS",
    )
)


def cannot_run(model_info: dict[str, Any]) -> str:
    """Why the decoder can't run a GGUF with this metadata (its architecture, its weights' file
    type), or "" where it can."""
    arch = model_info.get("general.architecture")
    if arch and arch not in ARCHITECTURES:
        return f"runs {', '.join(ARCHITECTURES)} models, not {arch}"
    file_type = model_info.get("general.file_type")
    name = FILE_TYPE_NAMES.get(file_type, str(file_type)) if isinstance(file_type, int) else ""
    if name and name not in FILE_TYPES:
        return f"cannot read {name} weights"
    return ""


# a layer's tensors kept stacked in one buffer (blk.N.<stack>): matrices that read the same input, and
# Gemma's query and key norms (one binding: a kernel has at most 8 storage buffers everywhere)
STACKS = {
    "attn_qkv": ("attn_q", "attn_k", "attn_v"),
    "ffn_gate_up": ("ffn_gate", "ffn_up"),
    "attn_qk_norm": ("attn_q_norm", "attn_k_norm"),
}


# the most values a row of the heads' shares of the output projection may hold (heads × width) for
# the attention to apply it (Decoder.output_shares): every workgroup of the next product reads them all
SHARES_MAX = 8192

# weights past this size in f16 are kept in 8 bits (a scale a block of 32: 1.125 bytes a weight instead
# of 2, or 4 without shader-f16), so a 1–3B model fits a browser's GPU; smaller ones keep f16's precision
Q8_ABOVE = 1 << 30
WEIGHTS = ("auto", "q8", "f16")  # how a Decoder holds its matrices (the module's docstring)
# a load submits its dispatches and frees their staging buffers (raw bytes, f32 before packing) once
# this many bytes are staged: it holds about one chunk beside the weights, not the whole model in f32
LOAD_CHUNK = 16 << 20

NO_WINNER = 0xFFFFFFFF  # argmax.wgsl's index where no value beat -3.4e38: NaN or -inf logits


NAN_LOGITS = "the GPU computed no finite logits (NaN): this adapter gave a wrong result"


def _winners(ids: tuple[int, ...] | list[int]) -> list[int]:
    """Argmax results, or an error where a row had no finite maximum (the GPU computed NaN)."""
    if NO_WINNER in ids:
        raise ForgeError(NAN_LOGITS)
    return list(ids)


def _finite(values: list[float]) -> list[float]:
    """Logits for the sampler, or an error where the GPU computed a NaN among them."""
    if any(map(math.isnan, values)):
        raise ForgeError(NAN_LOGITS)
    return values


@dataclass(frozen=True)
class DecoderShape:
    arch: str
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    eps: float
    rope_base: float
    n_rot: int
    window: int = 0  # sliding-window layers see this many keys (0: none)
    swa: tuple[bool, ...] = ()  # which layers slide
    rope_base_swa: float = 10000.0
    qk_norm: bool = False  # per-head RMSNorm of queries and keys before their rotation (Gemma 3, Qwen3)
    bias: bool = False  # q/k/v biases (Qwen2)
    factors: bool = False  # RoPE frequency factors (rope_freqs: Llama 3.1 and later)

    @property
    def gemma(self) -> bool:
        return self.arch == "gemma3"

    @property
    def neox(self) -> bool:
        return self.arch in NEOX

    @classmethod
    def from_gguf(cls, meta: dict[str, Any], tensors: dict[str, TensorInfo]) -> DecoderShape:
        arch = str(meta.get("general.architecture"))
        if reason := cannot_run({**meta, "general.architecture": arch}):
            raise ValueError(f"the GPU decoder {reason}")

        def key(name: str, default: Any = None) -> Any:
            value = meta.get(f"{arch}.{name}", default)
            if value is None:
                raise ValueError(f"the GGUF lacks {arch}.{name}")
            return value

        n_embd, n_head, n_layer = (
            int(key("embedding_length")),
            int(key("attention.head_count")),
            int(key("block_count")),
        )
        head_dim = int(key("attention.key_length", n_embd // n_head))
        window = int(key("sliding_window", 0) if arch == "llama" else key("attention.sliding_window", 0))
        pattern = int(key("attention.sliding_window_pattern", 6))  # llama.cpp's default for Gemma 3
        n_ff = int(key("feed_forward_length"))
        if any(width % 4 for width in (n_embd, n_ff, head_dim)):
            raise ValueError(
                "the GPU decoder needs widths that are multiples of 4 (it reads 4 values at once)"
            )
        scaling = str(meta.get(f"{arch}.rope.scaling.type") or "none")
        if scaling != "none" or float(meta.get(f"{arch}.rope.scale_linear") or 1.0) != 1.0:
            raise ValueError(f"the GPU decoder does not scale RoPE ({scaling}): the llama.cpp engine does")
        qk_norm = "blk.0.attn_q_norm.weight" in tensors
        if qk_norm and ("blk.0.attn_q.bias" in tensors or "rope_freqs.weight" in tensors):
            raise ValueError("the GPU decoder has no q/k/v biases or RoPE factors beside q/k norms")
        return cls(
            arch=arch,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            n_head_kv=int(key("attention.head_count_kv", n_head)),
            head_dim=head_dim,
            n_ff=n_ff,
            n_vocab=tensors["token_embd.weight"].shape[1],
            eps=float(key("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_base=float(key("rope.freq_base", 10000.0)),
            n_rot=int(key("rope.dimension_count", head_dim)),
            window=window,
            swa=tuple(bool(window) and i % pattern < pattern - 1 for i in range(n_layer)),
            rope_base_swa=float(key("rope.freq_base_swa", 10000.0)),
            qk_norm=qk_norm,
            bias="blk.0.attn_q.bias" in tensors,
            factors="rope_freqs.weight" in tensors,
        )

    @property
    def pair_rows(self) -> bool:
        """Whether NEOX query and key rows are reordered at load so that the product rotates them
        (llama.cpp's normal mode on neighbouring rows; the attention's scores are unchanged)."""
        return self.neox and not self.qk_norm


@dataclass
class _Rows:
    """A slice of rows of a vocabulary-sized matrix: one binding can't hold all of them."""

    first: int
    count: int
    buffer: Buffer
    form: str = "f32"  # "f32", "f16", "q8" or "q4" (Decoder._form)


def _flags(form: str) -> tuple[bool, bool, bool]:
    """The products' and gathers' (half, q8, q4) for weights held as ``form``."""
    return form == "f16", form == "q8", form == "q4"


def _from_blocks(form: str, infos: list[TensorInfo]) -> bool:
    """Whether tensors held as ``form`` are repacked straight from the file's blocks, exactly (no f32
    in between): 4 bits from Q4_0, Q4_1, Q4_K; 8 bits from Q8_0, Q5_0."""
    return form == "q4" or (form == "q8" and all(info.kind in ops.Q8_KINDS for info in infos))


@dataclass
class _Pass:
    recording: Recording
    ids: Buffer
    pos: Buffer
    base: Buffer  # each row's slot, as its first cache row
    logits: list[Buffer]  # one per slice of the vocabulary (rows: every row's, the last one's, or none)
    best: Buffer | None  # (index, value) of each output row's maximum
    top: Buffer | None  # each output row's ops.TOP_K most likely tokens, (index, value) pairs, best first
    tokens: Buffer | None = None  # a chained pass's greedy tokens, [steps, rows]


class Decoder:
    def __init__(
        self,
        device: GpuDevice,
        data: Any,
        meta: dict[str, Any],
        tensors: dict[str, TensorInfo],
        n_ctx: int,
        slots: int = 1,
        weights: str = "auto",
    ) -> None:
        self.device = device
        self.shape = sh = DecoderShape.from_gguf(meta, tensors)
        self.n_ctx = n_ctx
        self.slots = slots
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, not {weights!r}")
        matrices = sum(math.prod(info.shape) for info in tensors.values() if len(info.shape) == 2)
        large = 2 * matrices > Q8_ABOVE  # (the same on the host and in a page)
        self.q4, self.q8 = weights != "f16", weights == "q8" or (weights == "auto" and large)
        self.forms: dict[str, str] = {}  # each matrix's form where it is not f32
        self._load, self.load_peak = device.record(), 0  # the load's dispatches, its most bytes staged
        self._staging: list[Buffer] = []
        self.w: dict[str, Buffer] = {}
        big = ("token_embd.weight", "output.weight")
        stacked = {
            f"blk.{i}.{part}.weight" for i in range(sh.n_layer) for group in STACKS.values() for part in group
        }
        # q/k/v biases and RoPE frequency factors ride in the attention norm's buffer (linear.wgsl's
        # BIAS and FACTORS): the product has no binding left for them
        extras = [f"attn_{part}.bias" for part in "qkv"] if sh.bias else []
        stacked |= {f"blk.{i}.{extra}" for i in range(sh.n_layer) for extra in extras}
        for i in range(sh.n_layer if sh.bias or sh.factors else 0):
            p = f"blk.{i}."
            infos = [tensors[p + "attn_norm.weight"], *(tensors[p + extra] for extra in extras)]
            infos += [tensors["rope_freqs.weight"]] if sh.factors else []
            self.w[p + "attn_norm_extra"] = self._stack(data, infos, p + "attn_norm_extra")
        for name, info in tensors.items():
            if name not in big and name not in stacked:
                self.w[name] = self._weight(data, info)
        for i in range(sh.n_layer):
            for stack, parts in STACKS.items():
                names = [f"blk.{i}.{part}.weight" for part in parts]
                if all(name in tensors for name in names):
                    infos = [tensors[name] for name in names]
                    self.w[f"blk.{i}.{stack}"] = self._stack(data, infos, f"blk.{i}.{stack}")
        # Gemma's post-norms are folded into the next product's input (linear.wgsl's RESIDUAL): that
        # product's norm weights stacked with the post-norm pending before it
        self.post_norms = "blk.0.post_attention_norm.weight" in tensors
        # on a GPU, attention with few, narrow shares (Llama's short heads, Gemma's few) multiplies its
        # output by W_o itself, head by head, the feed-forward product adding the shares: one dispatch
        # fewer a layer (a CPU adapter gains nothing by it: lavapipe ran decode steps 12% and prompts 34%
        # slower)
        short = (sh.qk_norm or sh.head_dim <= 128) and sh.n_head * sh.n_embd <= SHARES_MAX
        # a head's columns of 8- or 4-bit weights must be whole blocks of 32
        projections = {form for name, form in self.forms.items() if name.endswith("attn_output.weight")}
        blocks = sh.head_dim % 32 == 0 or not projections & {"q8", "q4"}
        fold = bool(device.tuned.get("attention_output", not device.software))
        self.output_shares = fold and short and blocks
        for i in range(sh.n_layer if self.post_norms else 0):
            p = f"blk.{i}."
            ffn = [tensors[p + "ffn_norm.weight"], tensors[p + "post_attention_norm.weight"]]
            self.w[p + "ffn_fold_norms"] = self._stack(data, ffn, p + "ffn_fold_norms")
            if i:
                attn = [tensors[p + "attn_norm.weight"], tensors[f"blk.{i - 1}.post_ffw_norm.weight"]]
                self.w[p + "attn_fold_norms"] = self._stack(data, attn, p + "attn_fold_norms")
        self.embed = self._slices(data, tensors["token_embd.weight"])
        # the output projection; tied to the embeddings (the same buffers) where the model has none of its own
        out = tensors.get("output.weight")
        self.output = self._slices(data, out) if out else self.embed
        self._flush(force=True)
        kv = sh.n_head_kv * sh.head_dim
        self.kcache = [device.buffer(slots * n_ctx * kv * 2) for _ in range(sh.n_layer)]  # f16
        self.vcache = [device.buffer(slots * n_ctx * kv * 2) for _ in range(sh.n_layer)]
        self._passes: dict[tuple[int, str, bool, bool, int], _Pass] = {}

    @property
    def weight_bytes(self) -> int:
        """The GPU memory the weights take (the KV cache and a pass's buffers apart)."""
        tables = self.embed + ([] if self.output is self.embed else self.output)
        return sum(b.size for b in self.w.values()) + sum(part.buffer.size for part in tables)

    @property
    def memory_bytes(self) -> int:
        """The GPU memory the weights and the KV cache take."""
        return self.weight_bytes + sum(b.size for b in self.kcache + self.vcache)

    def _raw(self, data: Any, info: TensorInfo) -> Any:
        """A tensor's bytes as stored, NEOX query and key rows reordered where the product rotates."""
        raw = data[info.offset : info.offset + info.nbytes]
        part = info.name.split(".")[2] if info.name.startswith("blk.") else ""
        if self.shape.pair_rows and part in ("attn_q", "attn_k"):
            return neighbour_pairs(raw, info.shape[-1], self.shape.head_dim, self.shape.n_rot)
        return raw

    def _staged(self, buffer: Buffer) -> Buffer:
        """A buffer the load needs only until its dispatches have run."""
        self._staging.append(buffer)
        self.load_peak = max(self.load_peak, sum(b.size for b in self._staging))
        return buffer

    def _flush(self, force: bool = False) -> None:
        """Submit the load's dispatches so far and free their staging buffers, once those pass
        LOAD_CHUNK (or at the end of the load)."""
        if not force and sum(b.size for b in self._staging) < LOAD_CHUNK:
            return
        if self._load.dispatches:
            self.device.submit(self._load)
        for buffer in self._staging:
            self.device.release(buffer)
        self._load, self._staging = self.device.record(), []

    def _upload(self, raw: Any) -> Buffer:
        return self._staged(self.device.upload(raw))

    def _form(self, infos: list[TensorInfo]) -> str:
        """How the products read these tensors (one width, stacked): with ``q4`` (any weights but
        "f16") 4-bit where they all are Q4_0, Q4_1 or Q4_K and 8-bit where they all are Q8_0 or Q5_0
        (both repacked exactly), else 8-bit with ``q8``, else f16 where the adapter has shader-f16,
        else f32 (vectors too). 4 and 8 bits need widths that are multiples of 32."""
        k, count = infos[0].shape[0], sum(math.prod(info.shape) for info in infos)
        if len(infos[0].shape) != 2:
            return "f32"
        if k % ops.Q8_BLOCK == 0 and self.q4 and all(info.kind in ops.Q4_KINDS for info in infos):
            return "q4"
        if k % ops.Q8_BLOCK == 0 and self.q4 and all(info.kind in ops.Q8_KINDS for info in infos):
            return "q8"  # their blocks' own values: exact, where f16 would round them
        if k % ops.Q8_BLOCK == 0 and self.q8:
            return "q8"
        return "f16" if self.device.f16 and count % 2 == 0 else "f32"

    def _pack(self, values: Buffer, shape: tuple[int, ...], name: str, form: str) -> Buffer:
        """A matrix's f32 values in ``form`` ("q8", "f16"; "f32": as they are)."""
        if form == "f32":
            return values
        count = math.prod(shape)
        if form == "q8":
            packed = self.device.buffer(ops.q8_bytes(count // shape[0], shape[0]))
            ops.to_q8(self._load, values, packed, count // shape[0], shape[0])
        else:
            packed = self.device.buffer(count * 2)
            ops.to_half(self._load, values, packed, count)
        self.forms[name] = form
        self._staged(values)
        self._flush()
        return packed

    def _weight(self, data: Any, info: TensorInfo) -> Buffer:
        return self._stack(data, [info], info.name)

    def _stack(self, data: Any, infos: list[TensorInfo], name: str) -> Buffer:
        """Tensors of one width, their rows one after another in one buffer (matrices in the form
        ``_form`` says)."""
        form = self._form(infos)
        if _from_blocks(form, infos):
            k, rows = infos[0].shape[0], sum(info.shape[1] for info in infos)
            packed = self.device.buffer(ops.repacked_bytes(rows, k, infos[0].kind))
            row0 = 0
            for info in infos:
                raw = self._upload(self._raw(data, info))
                ops.repack(self._load, raw, packed, info.shape[1], k, info.kind, row0)
                row0 += info.shape[1]
            self.forms[name] = form
            self._flush()
            return packed
        counts = [math.prod(info.shape) for info in infos]
        values = self.device.buffer(sum(counts) * 4)
        offset = 0
        for info, count in zip(infos, counts, strict=True):
            raw = self._raw(data, info)
            if info.kind == "F32":
                self.device.write(values, raw, offset * 4)
            else:
                ops.dequantize(self._load, self._upload(raw), values, count, info.kind, offset)
            offset += count
        shape = (infos[0].shape[0], offset // infos[0].shape[0]) if len(infos[0].shape) == 2 else (offset,)
        return self._pack(values, shape, name, form)

    def _slices(self, data: Any, info: TensorInfo) -> list[_Rows]:
        """A [rows, cols] matrix in slices of rows, each within one storage binding (raw and f32)."""
        cols, rows = info.shape
        limit = self.device.limits.get("max_storage_buffer_binding_size", 128 << 20)
        row_bytes = info.nbytes // rows
        if _from_blocks(self._form([info]), [info]):
            widest = max(row_bytes, ops.repacked_bytes(1, cols, info.kind))
        else:  # its values pass through f32
            widest = max(row_bytes, cols * 4)
        per = max(1, limit // widest)
        slices = []
        for first in range(0, rows, per):
            count = min(per, rows - first)
            part = TensorInfo(
                info.name, (cols, count), info.kind, info.offset + first * row_bytes, count * row_bytes
            )
            buffer = self._weight(data, part)
            slices.append(_Rows(first, count, buffer, self.forms.pop(info.name, "f32")))
        return slices

    def _linear(
        self, rec: Recording, x: Buffer, name: str, out: Buffer, t: int, n: int, k: int, **kw: Any
    ) -> None:
        half, q8, q4 = _flags(self.forms.get(name, "f32"))
        ops.linear(rec, x, self.w[name], out, t, n, k, eps=self.shape.eps, half=half, q8=q8, q4=q4, **kw)

    def _record(self, t: int, outputs: str, top: bool, distinct: bool, chain: int) -> _Pass:
        """The pass over ``t`` rows; ``outputs``: "all" rows' next-token outputs, the "last" row's (a
        prompt's end: the vocabulary projection of one row), or "none" (a prompt's earlier chunks);
        ``top``: with each output row's TOP_K candidates besides its logits and argmax; ``distinct``:
        every row is its own sequence (a decode step), so none waits for another's keys. ``chain`` > 0
        (greedy decode steps): that many steps one after another, each row's argmax the next step's
        input, with no host between them."""
        dev, sh, w = self.device, self.shape, self.w
        d, hq, hkv, dh = sh.n_embd, sh.n_head, sh.n_head_kv, sh.head_dim
        rec = dev.record()
        ids, pos, base = dev.buffer(t * 4), dev.buffer(t * 4), dev.buffer(t * 4)
        x, o = dev.buffer(t * d * 4), dev.buffer(t * d * 4)
        # with post-norms the residual stream moves between x and spare: a product's input is x plus
        # the pending product o through its post-norm, and that sum is written to spare
        spare = dev.buffer(t * d * 4) if self.post_norms or self.output_shares else x
        # Gemma's queries, keys and values stay side by side for the attention to normalise and turn
        q = dev.buffer(t * (hq + 2 * hkv if sh.qk_norm else hq) * dh * 4)
        # the attention's output, or each head's share of the output projection
        attn = dev.buffer(t * hq * (d if self.output_shares else dh) * 4)
        a = dev.buffer(t * sh.n_ff * 4)
        n = {"all": t, "last": 1, "none": 0}[outputs]
        logits = [dev.buffer(n * part.count * 4) for part in self.output] if n else []
        best = dev.buffer(n * 8) if n else None
        tokens = dev.buffer(chain * t * 4) if chain else None
        scale = math.sqrt(d) if sh.gemma else 1.0
        for step in range(max(chain, 1)):
            for part in self.embed:
                half, q8, q4 = _flags(part.form)
                ops.gather(rec, ids, part.buffer, x, t, d, scale, part.first, part.count, half, q8, q4)
            for i in range(sh.n_layer):
                x, spare = self._layer(rec, i, t, distinct, (pos, base), (x, spare, o, q, attn, a))
            if n and self.post_norms:  # the last layer's output joins the stream
                last_post = w[f"blk.{sh.n_layer - 1}.post_ffw_norm.weight"]
                ops.rownorm(rec, o, x, t, d, "rms", last_post, sh.eps, accumulate=True)
            if not n:
                return _Pass(rec, ids, pos, base, [], None, None)
            y = x
            if outputs == "last":  # the last row alone: a row's numbers never depend on the others
                last, y = dev.upload(struct.pack("<I", t - 1)), dev.buffer(d * 4)
                ops.gather(rec, last, x, y, 1, d)
            for part, out in zip(self.output, logits, strict=True):
                norm = w["output_norm.weight"]
                half, q8, q4 = _flags(part.form)
                ops.linear(
                    rec, y, part.buffer, out, n, part.count, d, norm=norm, eps=sh.eps, half=half, q8=q8, q4=q4
                )
            parts = [(out, part.count, part.first) for part, out in zip(self.output, logits, strict=True)]
            assert best is not None
            ops.argmax(rec, parts, best, n, chain=(ids, pos, tokens, step) if tokens is not None else None)
        candidates = ops.top_candidates(rec, parts, n) if top else None
        return _Pass(rec, ids, pos, base, logits, best, candidates, tokens)

    def _layer(
        self, rec: Recording, i: int, t: int, distinct: bool, rows: tuple[Buffer, ...], bufs: tuple[Any, ...]
    ) -> tuple[Buffer, Buffer]:
        """Layer i of a pass: the residual stream's buffers (x, spare) after it."""
        sh, w = self.shape, self.w
        d, hq, hkv, dh = sh.n_embd, sh.n_head, sh.n_head_kv, sh.head_dim
        pos, base = rows
        x, spare, o, q, attn, a = bufs
        p = f"blk.{i}."
        qkv = sh.n_head * dh + 2 * hkv * dh
        theta = sh.rope_base_swa if sh.swa and sh.swa[i] else sh.rope_base
        kc, vc = self.kcache[i], self.vcache[i]
        attn_norm = w[p + "attn_norm.weight"]
        window = sh.window if sh.swa and sh.swa[i] else 0
        wo = p + "attn_output.weight"
        project = ops.OutputShares(w[wo], d, self.forms.get(wo, "f32")) if self.output_shares else None
        # a decode step's few workgroups share the projection's rows with more (a prompt has enough)
        splits = ops.attention_splits(self.device) if project and distinct else 1
        attend = (rec, q, kc, vc, pos, base, attn, t, hq, hkv, dh, window)
        if sh.qk_norm:  # per-head norms and rotation of queries and keys in the attention's dispatch
            if i and self.post_norms:  # the last layer's output through its post-norm, added in
                fold = w[p + "attn_fold_norms"]
                self._linear(rec, x, p + "attn_qkv", q, t, qkv, d, norm=fold, residual=(o, spare))
                x, spare = spare, x
            else:
                self._linear(rec, x, p + "attn_qkv", q, t, qkv, d, norm=attn_norm)
            new = ops.NewKeys(w[p + "attn_qk_norm"], sh.n_rot, theta, sh.eps, sh.neox)
            # rows of one sequence need each other's keys in the cache first: two dispatches
            if distinct:
                ops.causal_attention(*attend, new=new, mode="both", project=project, splits=splits)
            else:
                ops.causal_attention(*attend, new=new, mode="cache")
                ops.causal_attention(*attend, new=new, mode="attend", project=project)
        else:  # q/k/v (biases added), their rotation and the cache write in the one product
            split, rope = ((kc, hkv * dh), (vc, hkv * dh)), (pos, base, dh, sh.n_rot, theta)
            extra = {"bias": sh.bias, "factors": sh.factors}
            norm = w[p + "attn_norm_extra"] if sh.bias or sh.factors else attn_norm
            self._linear(rec, x, p + "attn_qkv", q, t, qkv, d, norm=norm, split=split, rope=rope, **extra)
            ops.causal_attention(*attend, project=project, splits=splits)
        gate = "gelu" if sh.gemma else "silu"
        if self.post_norms:  # each product's post-norm and residual add ride on the next product
            pending: dict[str, Any] = {"residual": (o, spare)}
            if self.output_shares:  # the heads' shares, added up and through the post-norm, join the stream
                pending = {"residual": (attn, spare), "parts": hq}
            else:
                self._linear(rec, attn, wo, o, t, d, hq * dh)
            fold = w[p + "ffn_fold_norms"]
            self._linear(rec, x, p + "ffn_gate_up", a, t, sh.n_ff, d, norm=fold, gate=gate, **pending)
            x, spare = spare, x
            self._linear(rec, a, p + "ffn_down.weight", o, t, d, sh.n_ff)
        elif self.output_shares:  # the heads' shares join the stream in the feed-forward's input
            ffn_norm = w[p + "ffn_norm.weight"]
            shares: dict[str, Any] = {"residual": (attn, spare), "parts": hq, "post_norm": False}
            self._linear(rec, x, p + "ffn_gate_up", a, t, sh.n_ff, d, norm=ffn_norm, gate=gate, **shares)
            x, spare = spare, x
            self._linear(rec, a, p + "ffn_down.weight", x, t, d, sh.n_ff, accumulate=True)
        else:  # the products add straight into the residual stream
            self._linear(rec, attn, p + "attn_output.weight", x, t, d, hq * dh, accumulate=True)
            ffn_norm = w[p + "ffn_norm.weight"]
            self._linear(rec, x, p + "ffn_gate_up", a, t, sh.n_ff, d, norm=ffn_norm, gate=gate)
            self._linear(rec, a, p + "ffn_down.weight", x, t, d, sh.n_ff, accumulate=True)
        return x, spare

    def submit(
        self, rows: list[tuple[int, int, int]], outputs: str = "all", top: bool = False, chain: int = 0
    ) -> _Pass:
        """Run rows of (token, position, slot): each token's keys and values join its slot's cache;
        ``outputs``, ``top`` and ``chain`` (greedy steps of distinct sequences: ``read_chain``) as
        ``_record`` says. The pass's outputs stay on the GPU until the next pass of its shape: read
        them first."""
        t = len(rows)
        if not t:
            raise ValueError("a pass needs at least one token")
        distinct = len({slot for _, _, slot in rows}) == t
        if chain and (outputs != "all" or top or not distinct):
            raise ValueError("a chained pass runs greedy decode steps, one row a sequence")
        for token, position, slot in rows:
            if position < 0 or position + max(chain, 1) > self.n_ctx:
                raise ValueError(f"position {position} is outside the context of {self.n_ctx}")
            if not 0 <= token < self.shape.n_vocab:
                raise ValueError(f"token id {token} is outside the vocabulary of {self.shape.n_vocab}")
            if not 0 <= slot < self.slots:
                raise ValueError(f"slot {slot} is not one of this decoder's {self.slots}")
        key = (t, outputs, top, distinct, chain)
        run = self._passes.get(key) or self._passes.setdefault(key, self._record(*key))
        self.device.write(run.ids, struct.pack(f"<{t}I", *(r[0] for r in rows)))
        self.device.write(run.pos, struct.pack(f"<{t}I", *(r[1] for r in rows)))
        self.device.write(run.base, struct.pack(f"<{t}I", *(r[2] * self.n_ctx for r in rows)))
        self.device.submit(run.recording)
        return run

    async def read_best(self, run: _Pass, t: int) -> list[int]:
        """Each of the pass's ``t`` rows' most likely next token (the lowest id on ties)."""
        assert run.best is not None
        pairs = struct.unpack(f"<{2 * t}I", await self.device.read(run.best, 8 * t))
        return _winners(pairs[0::2])

    async def read_chain(self, run: _Pass, t: int, steps: int) -> list[list[int]]:
        """Each of a chained pass's ``t`` rows' ``steps`` greedy tokens, in order."""
        assert run.tokens is not None
        flat = struct.unpack(f"<{steps * t}I", await self.device.read(run.tokens, 4 * steps * t))
        return [_winners(flat[row::t]) for row in range(t)]

    async def read_logits(self, run: _Pass, row: int) -> list[float]:
        """One row's logits."""
        values: list[float] = []
        for part, buffer in zip(self.output, run.logits, strict=True):
            raw = await self.device.read(buffer, part.count * 4, row * part.count * 4)
            values.extend(struct.unpack(f"<{part.count}f", raw))
        return _finite(values)

    async def read_top(self, run: _Pass, row: int) -> tuple[list[int], list[float]]:
        """One row's ops.TOP_K most likely tokens and their logits, best first (1 KB, not the vocabulary)."""
        assert run.top is not None
        raw = await self.device.read(run.top, ops.TOP_K * 8, row * ops.TOP_K * 8)
        pairs = struct.unpack(f"<{2 * ops.TOP_K}I", raw)
        ids = [i for i in pairs[0::2] if i != NO_WINNER]  # a vocabulary smaller than TOP_K pads
        values = struct.unpack(f"<{len(ids)}f", struct.pack(f"<{len(ids)}I", *pairs[1 : 2 * len(ids) : 2]))
        return ids, _finite(list(values))

    def _rows(self, tokens: list[int], start: int, slot: int) -> list[tuple[int, int, int]]:
        if start + len(tokens) > self.n_ctx:
            raise ValueError(
                f"{len(tokens)} tokens at position {start} do not fit the context of {self.n_ctx}"
            )
        return [(token, start + i, slot) for i, token in enumerate(tokens)]

    async def logits(self, tokens: list[int], start: int, slot: int = 0) -> list[list[float]]:
        """Run ``tokens`` at positions start.. of one slot: every row's logits."""
        run = self.submit(self._rows(tokens, start, slot))
        rows: list[list[float]] = [[] for _ in tokens]
        for part, buffer in zip(self.output, run.logits, strict=True):
            values = struct.unpack(f"<{len(tokens) * part.count}f", await self.device.read(buffer))
            for i, row in enumerate(rows):
                row.extend(values[i * part.count : (i + 1) * part.count])
        return rows

    async def greedy(self, tokens: list[int], start: int, slot: int = 0) -> list[int]:
        """The same pass, reading back only each row's most likely next token."""
        run = self.submit(self._rows(tokens, start, slot))
        return await self.read_best(run, len(tokens))


def neighbour_pairs(raw: Any, rows: int, head_dim: int, n_rot: int) -> bytes:
    """Rows of a query or key matrix (or bias) reordered head by head so that each NEOX rotation pair
    (i, i + n_rot / 2) becomes neighbours (2i, 2i + 1), as llama.cpp's normal mode pairs them."""
    size = len(raw) // rows
    half = n_rot // 2
    within = [j for i in range(half) for j in (i, i + half)] + list(range(n_rot, head_dim))
    order = [head + j for head in range(0, rows, head_dim) for j in within]
    return b"".join(raw[r * size : (r + 1) * size] for r in order)
