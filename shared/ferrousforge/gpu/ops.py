"""Recording the kernels with their grids: one function per kernel, shapes in, dispatches out.

Every function appends to a ``Recording``; nothing runs until the recording is submitted. Buffers
hold little-endian f32 (token ids and positions: u32).
"""

from __future__ import annotations

import math

from ferrousforge.gpu.device import Buffer, Recording

MAX_GROUPS = 65535
MAX_SEQUENCE = 512  # attention keeps a row of scores in workgroup memory
SKINNY_ROWS = 8  # matmuls of at most this many rows take the one-thread-a-column kernel


def _rows(rows: int) -> tuple[int, int, int]:
    """A grid of one workgroup per row, folded into y past the per-dimension limit."""
    return min(rows, MAX_GROUPS), math.ceil(rows / MAX_GROUPS), 1


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
    accumulate: bool = False,
) -> None:
    """c[m, n] = act(a[m, k] · w[n0 : n0 + n, k]ᵀ + bias), act "" | "gelu" | "tanh"; ``w_kn``: w stored
    [k, n]; ``half``: w is f16 (made by ``to_half``; needs shader-f16); ``accumulate``: c += instead."""
    skinny = m <= SKINNY_ROWS  # one live row in a 16×16 tile would waste 15/16 of the work
    kernel = rec.device.kernel(
        "matmul",
        GELU=act == "gelu",
        TANH=act == "tanh",
        WT=w_kn,
        F16=half,
        SKINNY=skinny,
        ACCUM=accumulate,
    )
    grid = (math.ceil(n / 64), 1, 1) if skinny else (math.ceil(n / 16), math.ceil(m / 16), 1)
    rec.dispatch(kernel, [a, w, bias, c], grid, (m, n, k, n0, 0, 0))


def matmul_split(
    rec: Recording,
    a: Buffer,
    w: Buffer,
    bias: Buffer,
    outs: list[Buffer],
    m: int,
    widths: list[int],
    k: int,
    half: bool,
) -> None:
    """Three matmuls as one (m ≤ SKINNY_ROWS): w stacks three matrices of ``widths`` rows; each part
    of the result goes to its own buffer of ``outs``, with the bits of three separate ``matmul``s."""
    if m > SKINNY_ROWS or len(outs) != 3 or len(widths) != 3:
        raise ValueError(f"matmul_split takes three outputs and at most {SKINNY_ROWS} rows")
    n = sum(widths)
    kernel = rec.device.kernel("matmul", SKINNY=True, SPLIT=True, F16=half)
    rec.dispatch(kernel, [a, w, bias, *outs], (math.ceil(n / 64), 1, 1), (m, n, k, 0, widths[0], widths[1]))


def matmul_glu(
    rec: Recording,
    a: Buffer,
    w: Buffer,
    bias: Buffer,
    c: Buffer,
    m: int,
    n: int,
    k: int,
    gelu: bool,
    half: bool,
) -> None:
    """c = act(a · gateᵀ) · (a · upᵀ) in one dispatch (m ≤ SKINNY_ROWS), w stacking [gate; up] (2n
    rows): the bits of two ``matmul``s and ``glu``."""
    if m > SKINNY_ROWS:
        raise ValueError(f"matmul_glu takes at most {SKINNY_ROWS} rows")
    kernel = rec.device.kernel("matmul", SKINNY=True, GLU=True, GELU_TANH=gelu, F16=half)
    rec.dispatch(kernel, [a, w, bias, c], (math.ceil(n / 64), 1, 1), (m, n, k, 0, 0, 0))


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
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
    "Q5_0": (32, 22),
    "Q5_1": (32, 24),
    "Q8_0": (32, 34),
    "Q4_K": (256, 144),
    "Q6_K": (256, 210),
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
    q: Buffer,
    k: Buffer,
    v: Buffer,
    mask: Buffer,
    out: Buffer,
    b: int,
    s: int,
    h: int,
    dh: int,
) -> None:
    """Bidirectional multi-head attention over a padded batch ([b, s, h·dh] each, mask [b, s])."""
    if s > MAX_SEQUENCE:
        raise ValueError(f"attention over {s} tokens: at most {MAX_SEQUENCE}")
    kernel = rec.device.kernel("attention", MAXS=MAX_SEQUENCE)
    rec.dispatch(kernel, [q, k, v, mask, out], (s, h, b), (b, s, h, dh, 1.0 / math.sqrt(dh)))


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
    grid = (math.ceil(d / 64), tokens, 1)
    rec.dispatch(
        rec.device.kernel("embed"),
        [ids, positions, types, word, position, type_table, out],
        grid,
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


def rope(
    rec: Recording,
    x: Buffer,
    pos: Buffer,
    t: int,
    h: int,
    d: int,
    n_rot: int,
    base: float,
    neox: bool,
    x2: Buffer | None = None,
    h2: int = 0,
) -> None:
    """Rotary embedding in place on x[t, h, d] at positions pos[t] (NEOX: halves; else pairs); with
    ``x2`` also on x2[t, h2, d] in the same dispatch."""
    kernel = rec.device.kernel("rope", NEOX=neox, TWO=x2 is not None)
    buffers = [pos, x] if x2 is None else [pos, x, x2]
    rec.dispatch(kernel, buffers, (t, h + h2, 1), (t, h, d, n_rot, float(base), h2))


def glu(rec: Recording, gate: Buffer, up: Buffer, out: Buffer, n: int, gelu: bool = False) -> None:
    """out = act(gate) · up: SiLU (SwiGLU), or tanh-GELU with ``gelu`` (GeGLU)."""
    rec.dispatch(rec.device.kernel("glu", GELU_TANH=gelu), [gate, up, out], _flat(n), (n,))


def argmax(rec: Recording, x: Buffer, out: Buffer, rows: int, n: int, with_value: bool = False) -> None:
    """out[r] = the index of row r's largest value (u32), the first on ties; ``with_value``: pairs
    (index, the value's f32 bits)."""
    rec.dispatch(rec.device.kernel("argmax", VALUE=with_value), [x, out], (rows, 1, 1), (n,))


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


def scatter(
    rec: Recording,
    src: Buffer,
    pos: Buffer,
    base: Buffer,
    dst: Buffer,
    t: int,
    w: int,
    src2: Buffer | None = None,
    dst2: Buffer | None = None,
) -> None:
    """dst[base[i] + pos[i]] = src[i] for rows of width w (new keys and values into the KV cache, each
    row's sequence starting at cache row base[i]); with ``src2``/``dst2`` the same for a second pair."""
    two = src2 is not None and dst2 is not None
    buffers = [src, pos, base, dst, *([src2, dst2] if two else [])]
    grid = (math.ceil(w / 64), t, 2 if two else 1)
    rec.dispatch(rec.device.kernel("scatter", TWO=two), buffers, grid, (t, w))  # type: ignore[arg-type]


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
) -> None:
    """Each query attends to its sequence's cache (from row base[i]) up to its own position (the last
    ``window`` keys if > 0)."""
    if d > 256 or hq % hkv:
        raise ValueError("causal attention needs head dim ≤ 256 and query heads a multiple of kv heads")
    params = (t, hq, hkv, d, scale if scale is not None else 1.0 / math.sqrt(d), window)
    rec.dispatch(rec.device.kernel("causal"), [q, kcache, vcache, pos, base, out], (t, hq, 1), params)


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
) -> None:
    """out[i] = table[ids[i] - first] · scale for ids in [first, first + rows) (token embeddings; a
    vocabulary too big for one binding is gathered slice by slice)."""
    grid = (math.ceil(d / 64), t, 1)
    rec.dispatch(rec.device.kernel("gather"), [ids, table, out], grid, (t, d, float(scale), first, rows))


def add(rec: Recording, y: Buffer, x: Buffer, n: int) -> None:
    """x += y."""
    rec.dispatch(rec.device.kernel("add"), [y, x], _flat(n), (n,))
