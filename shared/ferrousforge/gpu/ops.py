"""Recording the kernels with their grids: one function per kernel, shapes in, dispatches out.

Every function appends to a ``Recording``; nothing runs until the recording is submitted. Buffers
hold little-endian f32 (token ids and positions: u32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ferrousforge.gpu.device import Buffer, GpuDevice, Recording

MAX_GROUPS = 65535
MAX_SEQUENCE = 512  # attention keeps a row of scores in workgroup memory
SKINNY_ROWS = 8  # matmuls of at most this many rows take the one-thread-a-column kernel


@dataclass(frozen=True)
class MatmulTile:
    """matmul.wgsl's many-row tiling: a workgroup's bm × bn tile of C, a thread's tm × tn block
    (4 or 8), k through workgroup memory bk at a time; with ``prefetch`` the next k's tiles are read
    into registers while this one is summed (the same sums in the same order: the same bits)."""

    bm: int
    bn: int
    tm: int
    tn: int
    bk: int
    prefetch: bool = False

    def defines(self) -> dict[str, int]:
        mt, nt = self.bm // self.tm, self.bn // self.tn
        threads, ta, tw = mt * nt, self.bk * self.bm // 4, self.bk * self.bn // 4  # vec4s of each tile
        if ta % threads or tw % threads:
            raise ValueError(f"{self}: each thread must fill whole vec4s of both tiles")
        return {
            "BM": self.bm,
            "BN": self.bn,
            "BK": self.bk,
            "TM": self.tm,
            "TM4": self.tm // 4,
            "TN4": self.tn // 4,
            "TM8": self.tm == 8,
            "TN8": self.tn == 8,
            "MT": mt,
            "NT": nt,
            "THREADS": threads,
            "TA": ta,
            "TW": tw,
            "LA": ta // threads,
            "LW": tw // threads,
            "ACC": self.tm * self.tn // 4,
            "PREFETCH": self.prefetch,
        }


# The tilings a device chooses between (tune.py measures them on hardware adapters); the first is
# the default: it suits CPU adapters and small GPUs.
MATMUL_TILES = (
    MatmulTile(64, 64, 4, 4, 16),
    MatmulTile(64, 64, 8, 8, 16),
    MatmulTile(128, 64, 8, 8, 8),
    MatmulTile(128, 128, 8, 8, 8),
    MatmulTile(64, 64, 8, 8, 16, prefetch=True),
    MatmulTile(128, 64, 8, 8, 8, prefetch=True),
    MatmulTile(128, 128, 8, 8, 8, prefetch=True),
)


def _rows(rows: int) -> tuple[int, int, int]:
    """A grid of one workgroup per row, folded into y past the per-dimension limit."""
    return min(rows, MAX_GROUPS), math.ceil(rows / MAX_GROUPS), 1


def _tokens(tokens: int, d: int) -> tuple[int, int, int]:
    """A grid of 64 columns by one token a workgroup, tokens folded into z past the per-dimension
    limit (the kernel's token: y + z · 65535)."""
    return math.ceil(d / 64), min(tokens, MAX_GROUPS), math.ceil(tokens / MAX_GROUPS)


def matmul(
    rec: Recording,
    a: Buffer,
    w: Buffer,
    bias: Buffer,
    c: Buffer,
    m: int,
    n: int,
    k: int,
    act: str = "",
    w_kn: bool = False,
    half: bool = False,
    n0: int = 0,
    tile: MatmulTile | None = None,
) -> None:
    """c[m, n] = act(a[m, k] · w[n0 : n0 + n, k]ᵀ + bias), act "" | "gelu" | "tanh"; ``w_kn``: w stored
    [k, n]; ``half``: w is f16 (made by ``to_half``; needs shader-f16). ``tile``: the many-row
    kernel's tiling (default: the one the device measured fastest for this (n, k), else for all the
    shapes it measured, else the first of ``MATMUL_TILES``)."""
    skinny = m <= SKINNY_ROWS  # a few live rows in a 64-row tile would waste most of its work
    tuned = rec.device.tuned
    tile = tile or tuned.get("matmul_shapes", {}).get((n, k)) or tuned.get("matmul") or MATMUL_TILES[0]
    kernel = rec.device.kernel(
        "matmul",
        GELU=act == "gelu",
        TANH=act == "tanh",
        WT=w_kn,
        W4=w_kn and n % 4 == 0,  # W's runs of 4 columns loaded as one vec4
        F16=half,
        SKINNY=skinny,
        **({} if skinny else tile.defines()),
    )
    grid = (math.ceil(n / 64), 1, 1) if skinny else (math.ceil(n / tile.bn), math.ceil(m / tile.bm), 1)
    rec.dispatch(kernel, [a, w, bias, c], grid, (m, n, k, n0, 0, 0))


LINEAR_LANES = 32  # threads along k for one row of w in linear.wgsl on a GPU (a workgroup is 256)


def linear_lanes(device: GpuDevice, n: int) -> int:
    """linear.wgsl's threads a row of w for an n-row w on this device: ``device.tuned["linear_lanes"]``
    where set (16, 32, 64 or 128), else 32 on a GPU (on an H200 a decode step's products took 12-21%
    less time than with 16: more workgroups, fewer loads in a row a thread) and 16 on a CPU adapter;
    halved while the rows' workgroups would pass the grid's limit. The choice depends on the device and
    n alone, never on the batch: each sums a row's k in its own fixed order."""
    lanes = int(device.tuned.get("linear_lanes", 16 if device.software else LINEAR_LANES))
    if lanes not in (16, 32, 64, 128):
        raise ValueError(f"linear.wgsl takes 16, 32, 64 or 128 threads a row, not {lanes}")
    limit = device.limits.get("max_compute_workgroups_per_dimension", 65535)
    while lanes > 16 and math.ceil(n / (256 // lanes)) > limit:
        lanes //= 2
    return lanes


# causal.wgsl's loads at once a thread on a GPU: a thread's share of a 64-key block (16 values, and
# up to 16 groups of 4 of a key's dims) in one round, so it waits on memory twice a block, not 8 times
ATTENTION_UNROLL = 16


def attention_unroll(device: GpuDevice, d: int) -> dict[str, Any]:
    """causal.wgsl's defines for heads of d dims: its value loads at once a thread,
    ``device.tuned["attention_unroll"]`` where set, else ``ATTENTION_UNROLL`` on a GPU (and the block's
    maximum in two steps) and 1 on a CPU adapter (as linear_unroll); its key loads, as many but no more
    than a thread has (d / 16). The sums' order is the same for any value: no bit changes."""
    unroll = int(device.tuned.get("attention_unroll", 1 if device.software else ATTENTION_UNROLL))
    if not 1 <= unroll <= 16:
        raise ValueError(f"causal.wgsl loads 1 to 16 keys or values at once, not {unroll}")
    return {"UNROLL": unroll, "KUNROLL": min(unroll, math.ceil(d / 16)), "UNROLLED": unroll > 1}


# causal.wgsl's workgroups a head on a GPU where it applies the output projection in a decode step, each
# a part of W_o's rows: gemma3:270m's 4 heads would otherwise read 640 rows each on 4 of a GPU's cores,
# a thread's loads 12 rounds in a row
ATTENTION_SPLITS = 4


def attention_splits(device: GpuDevice) -> int:
    """causal.wgsl's workgroups a head for the output projection in a decode step:
    ``device.tuned["attention_splits"]`` where set, else ``ATTENTION_SPLITS`` on a GPU and 1 on a CPU
    adapter (where each part repeats the attention on the same cores). Any number gives the same bits."""
    splits = int(device.tuned.get("attention_splits", 1 if device.software else ATTENTION_SPLITS))
    if not 1 <= splits <= 16:
        raise ValueError(f"causal.wgsl splits the output projection 1 to 16 ways, not {splits}")
    return splits


# a lane's groups of 4 weights linear.wgsl loads before summing them: a decode step's rows are short (a
# thread has 5-20 groups), so one load at a time leaves the thread waiting on memory each time
LINEAR_UNROLL = 4


def linear_unroll(device: GpuDevice) -> int:
    """linear.wgsl's loads at once a lane: ``device.tuned["linear_unroll"]`` where set (1, 2, 4 or 8),
    else ``LINEAR_UNROLL`` on a GPU and 1 on a CPU adapter (where lavapipe ran a decode step's products
    at half the speed unrolled). The sums' order is the same for any value: a row's bits do not change."""
    unroll = int(device.tuned.get("linear_unroll", 1 if device.software else LINEAR_UNROLL))
    if unroll not in (1, 2, 4, 8):
        raise ValueError(f"linear.wgsl loads 1, 2, 4 or 8 groups at once, not {unroll}")
    return unroll


def linear(
    rec: Recording,
    x: Buffer,
    w: Buffer,
    out: Buffer,
    m: int,
    n: int,
    k: int,
    *,
    half: bool = False,
    q8: bool = False,
    q4: bool = False,
    n0: int = 0,
    norm: Buffer | None = None,
    eps: float = 1e-6,
    gate: str = "",
    split: tuple[tuple[Buffer, int], tuple[Buffer, int]] | None = None,
    accumulate: bool = False,
    rope: tuple[Buffer, Buffer, int, int, float] | None = None,
    residual: tuple[Buffer, Buffer] | None = None,
    parts: int = 1,
    post_norm: bool = True,
    bias: bool = False,
    factors: bool = False,
) -> None:
    """The GPU decoder's matrix product (linear.wgsl, batch-invariant): out[m, n] = x[m, k] · w[n0 :
    n0 + n, k]ᵀ, k a multiple of 4; ``half``: w is f16; ``q8``, ``q4``: w's rows as ``to_q8`` or
    ``to_q4`` write them (k a multiple of 32). ``norm``: x RMS-normalised first with these
    weights; ``gate`` "silu" | "gelu": w stacks [gate; up] (2n rows from n0) and out = act(gate) · up;
    ``split`` ((out2, n2), (out3, n3)): of the n columns the last n2 + n3 go to out2 and out3;
    ``accumulate``: out += the product. ``rope`` (pos, base, head dim, n_rot, theta), with ``split``:
    queries (out) and keys rotated in llama.cpp's "normal" mode at each row's position, and split's
    outputs taken as the key and value caches (f16), written at row base[i] + pos[i] (Llama's q/k/v, RoPE
    and cache write in one dispatch). ``residual`` (pending, x_out), with ``norm`` holding 2k weights
    [norm; post]: the input is x + rms_norm(pending) · post, written to x_out too (Gemma's post-norm
    folded into the next product); ``parts``: pending holds that many shares a row ([m, parts, k], added
    in order: ``causal_attention``'s heads' shares of the output projection); ``post_norm`` False: no
    post-norm, the input is x + pending (Llama's residual add folded in; ``norm`` holds k weights).
    ``bias``: ``norm`` holds k weights then n0 + n biases, each column's added after the norm (Qwen2's
    q/k/v); ``factors``, with ``rope``: after those, n_rot / 2 frequency factors dividing each pair's
    angle (Llama 3's rope_freqs)."""
    if residual is not None and norm is None:
        raise ValueError("a residual input goes with norm")
    if (parts != 1 or not post_norm) and residual is None:
        raise ValueError("parts and post_norm describe a residual input")
    if (bias or factors) and (norm is None or residual is not None or gate):
        raise ValueError("biases and frequency factors travel in a norm's buffer, without residual or gate")
    if factors and rope is None:
        raise ValueError("frequency factors go with rope")
    if half + q8 + q4 > 1:
        raise ValueError("weights are f16, 8-bit or 4-bit, not several")
    if k % 4 or ((q8 or q4) and k % 32):
        raise ValueError(f"linear needs k to be a multiple of {32 if q8 or q4 else 4}, not {k}")
    if gate not in ("", "silu", "gelu"):
        raise ValueError(f"unknown gate activation '{gate}'")
    lanes = linear_lanes(rec.device, n)
    kernel = rec.device.kernel(
        "linear",
        LANES=lanes,
        WROWS=256 // lanes,
        UNROLL=(unroll := linear_unroll(rec.device)),
        UNROLLED=unroll > 1,
        F16=half,
        Q8=q8,
        Q4=q4,
        NORM=norm is not None,
        GLU=bool(gate),
        GELU_TANH=gate == "gelu",
        SPLIT=split is not None,
        ACCUM=accumulate,
        ROPE=rope is not None,
        RESIDUAL=residual is not None,
        PLAIN=not post_norm,
        BIAS=bias,
        FACTORS=factors,
    )
    buffers = [x, w, *([norm] if norm is not None else []), out]
    n1 = n2 = 0
    if split is not None:
        (out2, n2), (out3, n3) = split
        n1 = n - n2 - n3
        buffers += [out2, out3]
    head, n_rot, theta = 0, 0, 0.0
    if rope is not None:
        if split is None or n1 % 2 or n2 % 2:
            raise ValueError("rope goes with split, on an even number of query and key columns")
        pos, base, head, n_rot, theta = rope
        buffers += [pos, base]
    if residual is not None:
        buffers += list(residual)
    grid = (math.ceil(n / (256 // lanes)), math.ceil(m / 8), 1)
    extra = k + (n0 + n if bias else 0)  # where the frequency factors start in norm
    params = (m, n, k, n0, n1, n2, float(eps), head, n_rot, float(theta), extra if factors else 0, parts)
    rec.dispatch(kernel, buffers, grid, params)


Q8_BLOCK = 32  # values a to_q8 scale covers


def q8_bytes(rows: int, k: int) -> int:
    """The size of ``rows`` rows of ``k`` values as ``to_q8`` writes them."""
    return rows * (k + 4 * (k // Q8_BLOCK))


def to_q8(rec: Recording, x: Buffer, y: Buffer, rows: int, k: int) -> None:
    """y = x's rows of k values (k a multiple of 32) in 8 bits, a scale a block of 32 (quant8.wgsl);
    y holds ``q8_bytes(rows, k)``."""
    if k % Q8_BLOCK:
        raise ValueError(f"8-bit rows need a width that is a multiple of {Q8_BLOCK}, not {k}")
    blocks = rows * k // Q8_BLOCK
    rec.dispatch(rec.device.kernel("quant8"), [x, y], _flat(blocks), (blocks, k, 0))


Q8_KINDS = ("Q8_0", "Q5_0")  # GGUF types whose blocks are 32 values of at most 8 bits and a scale


def blocks_to_q8(rec: Recording, raw: Buffer, y: Buffer, rows: int, k: int, kind: str, row0: int = 0) -> None:
    """y's rows row0.. = a GGUF tensor of ``rows`` rows of k values stored as ``kind`` (Q8_0, Q5_0) in
    ``raw``, repacked as ``to_q8`` writes rows with the blocks' own values and scales (exactly)."""
    if kind not in Q8_KINDS or k % Q8_BLOCK:
        raise ValueError(f"8-bit rows come from whole blocks of {', '.join(Q8_KINDS)} rows, not {kind} × {k}")
    blocks = rows * k // Q8_BLOCK
    kernel = rec.device.kernel("quant8", RAW=True, **{kind: True})
    rec.dispatch(kernel, [raw, y], _flat(blocks), (blocks, k, row0))


def repacked_bytes(rows: int, k: int, kind: str) -> int:
    """The size of ``rows`` rows of ``k`` values of a Q4_KINDS or Q8_KINDS tensor as ``repack`` writes."""
    return q4_bytes(rows, k) if kind in Q4_KINDS else q8_bytes(rows, k)


def repack(rec: Recording, raw: Buffer, y: Buffer, rows: int, k: int, kind: str, row0: int = 0) -> None:
    """y's rows row0.. = a GGUF tensor's blocks repacked exactly: in 4 bits (``to_q4``) for Q4_KINDS,
    in 8 (``blocks_to_q8``) for Q8_KINDS."""
    (to_q4 if kind in Q4_KINDS else blocks_to_q8)(rec, raw, y, rows, k, kind, row0)


Q4_KINDS = ("Q4_0", "Q4_1", "Q4_K")  # GGUF types whose blocks are 4-bit values, a scale and a min


def q4_bytes(rows: int, k: int) -> int:
    """The size of ``rows`` rows of ``k`` values as ``to_q4`` writes them."""
    return rows * 3 * k // 4


def to_q4(rec: Recording, raw: Buffer, y: Buffer, rows: int, k: int, kind: str, row0: int = 0) -> None:
    """y's rows row0.. = a GGUF tensor of ``rows`` rows of k values stored as ``kind`` (Q4_0, Q4_1,
    Q4_K) in ``raw``, repacked in 4 bits with an f32 scale and min a block of 32 (quant4.wgsl: the
    dequantized values exactly, 0.75 bytes each)."""
    per = GGUF_BLOCKS[kind][0] if kind in Q4_KINDS else 0
    if not per or k % per:
        raise ValueError(f"4-bit rows come from whole blocks of {', '.join(Q4_KINDS)} rows, not {kind} × {k}")
    blocks = rows * k // Q8_BLOCK
    rec.dispatch(rec.device.kernel("quant4", **{kind: True}), [raw, y], _flat(blocks), (blocks, k, row0))


def to_half(rec: Recording, x: Buffer, y: Buffer, n: int) -> None:
    """y = x as f16 (n values, n even); y holds 2·n bytes."""
    if n % 2:
        raise ValueError("to_half converts an even number of values")
    if not rec.device.f16:
        raise ValueError("this adapter has no shader-f16")
    rec.dispatch(rec.device.kernel("half", F16=True), [x, y], _flat(n // 2), (n // 2,))


# GGUF tensor types the GPU dequantizes (ggml's type ids) and (values, bytes) per block
GGUF_BLOCKS = {
    "F16": (1, 2),
    "BF16": (1, 2),
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
    "Q5_0": (32, 22),
    "Q5_1": (32, 24),
    "Q8_0": (32, 34),
    "Q2_K": (256, 84),
    "Q3_K": (256, 110),
    "Q4_K": (256, 144),
    "Q5_K": (256, 176),
    "Q6_K": (256, 210),
    "IQ4_NL": (32, 18),
    "IQ4_XS": (256, 136),
}


def dequantize(rec: Recording, raw: Buffer, out: Buffer, n: int, kind: str, offset: int = 0) -> None:
    """out[offset:] = the f32 values of a GGUF tensor of ``n`` values stored as ``kind`` in ``raw``."""
    if kind not in GGUF_BLOCKS:
        raise ValueError(f"cannot dequantize {kind} on the GPU (has: {', '.join(GGUF_BLOCKS)})")
    define = "HALF" if kind == "F16" else kind  # "F16" is the layer's own define (shader-f16)
    rec.dispatch(rec.device.kernel("dequant", **{define: True}), [raw, out], _flat(n), (n, offset))


def gemv(rec: Recording, w: Buffer, x: Buffer, bias: Buffer, y: Buffer, n: int, k: int) -> None:
    """y[n] = w[n, k] · x[k] + bias; k a multiple of 4."""
    if k % 4:
        raise ValueError("gemv needs k to be a multiple of 4")
    rec.dispatch(rec.device.kernel("gemv"), [w, x, bias, y], _rows(n), (n, k))


def layernorm(
    rec: Recording,
    x: Buffer,
    gamma: Buffer,
    beta: Buffer,
    y: Buffer,
    rows: int,
    d: int,
    eps: float,
    residual: Buffer | None = None,
) -> None:
    """y = LayerNorm(x [+ residual]); with a residual, x becomes x + residual too."""
    kernel = rec.device.kernel("layernorm", RESIDUAL=residual is not None)
    rec.dispatch(kernel, [x, residual or gamma, gamma, beta, y], _rows(rows), (rows, d, float(eps)))


def rownorm(
    rec: Recording,
    x: Buffer,
    y: Buffer,
    rows: int,
    d: int,
    mode: str,
    w: Buffer | None = None,
    eps: float = 1e-6,
    accumulate: bool = False,
) -> None:
    """Per row: ``"l2"`` normalisation, ``"softmax"``, ``"rms"`` (weights w) or ``"rms1"`` (weights 1 + w);
    ``accumulate`` (with ``"rms"``): y += the norm."""
    if accumulate and mode != "rms":
        raise ValueError('rownorm accumulates an "rms" norm only')
    defines = {"L2": mode == "l2", "SOFTMAX": mode == "softmax", "RMS": mode in ("rms", "rms1")}
    kernel = rec.device.kernel("rownorm", ONE_PLUS=mode == "rms1", ACCUM=accumulate, **defines)
    rec.dispatch(kernel, [x, w or x, y], _rows(rows), (rows, d, float(eps)))


def attention(
    rec: Recording,
    qkv: Buffer,
    mask: Buffer,
    out: Buffer,
    b: int,
    s: int,
    h: int,
    dh: int,
) -> None:
    """Bidirectional multi-head attention over a padded batch: qkv [b, s, 3·h·dh] (each token's
    queries, keys and values side by side), mask [b, s], out [b, s, h·dh]."""
    if s > MAX_SEQUENCE:
        raise ValueError(f"attention over {s} tokens: at most {MAX_SEQUENCE}")
    kernel = rec.device.kernel("attention", MAXS=MAX_SEQUENCE)
    rec.dispatch(kernel, [qkv, mask, out], (s, h, b), (b, s, h, dh, 1.0 / math.sqrt(dh)))


def embed(
    rec: Recording,
    ids: Buffer,
    positions: Buffer,
    types: Buffer,
    word: Buffer,
    position: Buffer,
    type_table: Buffer,
    out: Buffer,
    tokens: int,
    d: int,
) -> None:
    """out[t] = word[ids[t]] + position[positions[t]] + type_table[types[t]]."""
    rec.dispatch(
        rec.device.kernel("embed"),
        [ids, positions, types, word, position, type_table, out],
        _tokens(tokens, d),
        (tokens, d),
    )


def pool(
    rec: Recording, h: Buffer, mask: Buffer, out: Buffer, b: int, s: int, d: int, how: str = "mean"
) -> None:
    """Sentence vectors: ``mean`` (over real tokens), ``cls``, ``max`` or ``last``."""
    if how not in ("mean", "cls", "max", "last"):
        raise ValueError(f"unknown pooling '{how}'")
    kernel = rec.device.kernel("pool", **{how.upper(): True})
    rec.dispatch(kernel, [h, mask, out], (math.ceil(d / 64), b, 1), (b, s, d))


# -- decoder kernels -------------------------------------------------------------------------------
def _flat(n: int) -> tuple[int, int, int]:
    groups = math.ceil(n / 256)
    return min(groups, MAX_GROUPS), math.ceil(groups / MAX_GROUPS), 1


def argmax(
    rec: Recording,
    parts: list[tuple[Buffer, int, int]],
    out: Buffer,
    rows: int,
    chain: tuple[Buffer, Buffer, Buffer, int] | None = None,
) -> None:
    """Each row's largest value over a vocabulary held in slices ``parts`` of (values [rows, count],
    count, first index): out[r] = (index, the value's f32 bits), the lowest index on ties. Chunks of
    4096 values side by side, then (where there are several) their results. ``chain`` (ids, pos,
    tokens, step): the winner also becomes the row's next input (ids[r] = index, pos[r] += 1) and
    tokens[step · rows + r], so the next decode step of a chained pass follows on the GPU."""
    dev = rec.device
    chunks = [math.ceil(count / _ARGMAX_CHUNK) for _, count, _ in parts]
    total = sum(chunks)
    final = {"CHAIN": chain is not None}
    last = list(chain[:3]) if chain is not None else []
    step = chain[3] if chain is not None else 0
    if total == 1:
        ((values, count, first),) = parts
        params = (count, count, first, 0, 1, step)
        rec.dispatch(dev.kernel("argmax", **final), [values, out, *last], (1, rows, 1), params)
        return
    partial, offset = dev.buffer(rows * total * 8), 0
    for (values, count, first), n in zip(parts, chunks, strict=True):
        params = (count, _ARGMAX_CHUNK, first, offset, total, 0)
        rec.dispatch(dev.kernel("argmax"), [values, partial], (n, rows, 1), params)
        offset += n
    params = (total, total, 0, 0, 1, step)
    rec.dispatch(dev.kernel("argmax", PAIRS=True, **final), [partial, out, *last], (1, rows, 1), params)


_ARGMAX_CHUNK = 4096  # values one argmax workgroup takes (16 a thread)


TOP_K = 128  # candidates per row (topk.wgsl's K)
_TOP_CHUNK = 1024  # entries one workgroup sorts (topk.wgsl's CHUNK)


def top_candidates(rec: Recording, parts: list[tuple[Buffer, int, int]], rows: int) -> Buffer:
    """Each row's TOP_K largest logits as (index, value bits) pairs, best first (ties: lower index),
    over a vocabulary held in slices ``parts`` of (logits [rows, count], count, first index): rounds of
    sorting chunks of 1024 and keeping 128, until one chunk's worth is left."""
    dev = rec.device
    chunks = [math.ceil(count / _TOP_CHUNK) for _, count, _ in parts]
    width = sum(chunks) * TOP_K  # pairs a row after the first round
    out = dev.buffer(rows * width * 8)
    offset = 0
    for (logits, count, first), n in zip(parts, chunks, strict=True):
        rec.dispatch(dev.kernel("topk"), [logits, out], (n, rows, 1), (count, width, first, offset))
        offset += n * TOP_K
    while width > TOP_K:
        n = math.ceil(width / _TOP_CHUNK)
        src, out = out, dev.buffer(rows * n * TOP_K * 8)
        rec.dispatch(dev.kernel("topk", PAIRS=True), [src, out], (n, rows, 1), (width, n * TOP_K, 0, 0))
        width = n * TOP_K
    return out


@dataclass(frozen=True)
class NewKeys:
    """How attention turns a pass's raw queries and keys before use (Gemma): each query and key head
    RMS-normalised (``norms``: the queries' d weights, then the keys'), then rotated (RoPE on the first
    ``n_rot`` dims; ``neox`` pairs halves, else neighbours)."""

    norms: Buffer
    n_rot: int
    theta: float
    eps: float
    neox: bool = True


ATTENTION_MODES = {"cache": 1, "attend": 2, "both": 3}


@dataclass(frozen=True)
class OutputShares:
    """The output projection W_o ([width, heads · head dim]) as the decoder holds it (``form``: "f32",
    "f16", "q8" or "q4"), for ``causal_attention`` to apply head by head."""

    w: Buffer
    width: int
    form: str = "f32"


def causal_attention(
    rec: Recording,
    q: Buffer,
    kcache: Buffer,
    vcache: Buffer,
    pos: Buffer,
    base: Buffer,
    out: Buffer,
    t: int,
    hq: int,
    hkv: int,
    d: int,
    window: int = 0,
    scale: float | None = None,
    new: NewKeys | None = None,
    mode: str = "attend",
    project: OutputShares | None = None,
    splits: int = 1,
) -> None:
    """Each query attends to its sequence's cache (f16 keys and values, from row base[i]) up to its
    own position (the last ``window`` keys if > 0), into ``out`` [t, hq, d]. With ``new``, q holds each
    row's raw queries, keys and values side by side ([t, (hq + 2 hkv) d], as the product gives them),
    and ``mode`` says what a dispatch does: "cache" puts this pass's keys and values into the cache,
    "attend" attends, "both" does both in one dispatch — only where every row is its own sequence.
    With ``project`` each head's output goes through its columns of the output projection: out[t, h]
    holds that head's share (``project.width`` values), which ``linear(..., residual=(out, ...),
    parts=hq)`` adds up; ``splits`` workgroups a head then each attend and compute a part of those
    values (the same bits for any number: ``attention_splits``)."""
    if d > 256 or d % 4 or hq % hkv:
        raise ValueError(
            "causal attention needs a head dim ≤ 256, a multiple of 4, and query heads a multiple of kv heads"
        )
    if new is None and mode != "attend":
        raise ValueError("only new keys are put into the cache")
    if splits < 1 or (splits > 1 and (project is None or mode == "cache")):
        raise ValueError("the output projection's rows are split, one part a workgroup, where it is applied")
    scale = scale if scale is not None else 1.0 / math.sqrt(d)
    forms: dict[str, bool] = {}
    if project is not None:
        if project.form in ("q8", "q4") and d % 32:
            raise ValueError(
                f"a head's columns of 8- or 4-bit weights need a head dim a multiple of 32, not {d}"
            )
        forms = {
            "OPROJ": True,
            "F16": project.form == "f16",
            "Q8": project.form == "q8",
            "Q4": project.form == "q4",
        }
    width = project.width if project else 0
    turn = (new.n_rot, float(new.theta), float(new.eps)) if new else (0, 0.0, 0.0)
    params = (t, hq, hkv, d, scale, window, ATTENTION_MODES[mode], *turn, width, splits)
    rotate = {"ROTATE": True, "NEOX": new.neox} if new else {}
    kernel = rec.device.kernel("causal", **rotate, **attention_unroll(rec.device, d), **forms)
    buffers = [q, kcache, vcache, pos, base, out, *([project.w] if project else [])]
    rec.dispatch(kernel, [*buffers, *([new.norms] if new else [])], (t, hq, splits), params)


def gather(
    rec: Recording,
    ids: Buffer,
    table: Buffer,
    out: Buffer,
    t: int,
    d: int,
    scale: float = 1.0,
    first: int = 0,
    rows: int = 2**32 - 1,
    half: bool = False,
    q8: bool = False,
    q4: bool = False,
) -> None:
    """out[i] = table[ids[i] - first] · scale for ids in [first, first + rows) (token embeddings; a
    vocabulary too big for one binding is gathered slice by slice); ``half``: the table is f16;
    ``q8``, ``q4``: rows as ``to_q8`` or ``to_q4`` write them (d a multiple of 32)."""
    kernel = rec.device.kernel("gather", F16=half, Q8=q8, Q4=q4)
    rec.dispatch(kernel, [ids, table, out], _tokens(t, d), (t, d, float(scale), first, rows))
