"""The GPU compute layer's kernels against numpy, natively through wgpu (lavapipe here: a CPU Vulkan
driver, slow but exact), on odd shapes that are not multiples of any tile."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from functools import partial

import numpy as np
import pytest
from spirv import _bert

from ferrousforge.gpu import ops, tune
from ferrousforge.gpu.bert import BertEncoder, BertShape
from ferrousforge.gpu.device import GpuDevice
from ferrousforge.gpu.wgsl import preprocess


@pytest.fixture(scope="module")
def gpu() -> GpuDevice:
    from ferrousforge.gpu.native import NativeDevice

    return NativeDevice()


def up(gpu: GpuDevice, array: np.ndarray) -> object:
    return gpu.upload(np.ascontiguousarray(array).tobytes())


def run(gpu: GpuDevice, record, out, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:  # type: ignore[no-untyped-def]
    rec = gpu.record()
    record(rec)
    gpu.submit(rec)
    data = asyncio.run(gpu.read(out, int(np.prod(shape)) * np.dtype(dtype).itemsize))
    return np.frombuffer(data, dtype=dtype).reshape(shape)


rng = np.random.default_rng(0)


def randn(*shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def test_preprocessor_keeps_branches_and_fills_values() -> None:
    src = "a\n#if X\nb ${N}\n#if Y\nc\n#else\nd\n#endif\n#else\ne\n#endif\nlet v: FLOAT = 1.0;"
    assert preprocess(src, {"X": True, "Y": False, "N": 7}).split() == [
        "a",
        "b",
        "7",
        "d",
        "let",
        "v:",
        "f32",
        "=",
        "1.0;",
    ]
    assert preprocess(src, {"X": False, "N": 7, "F16": True}).splitlines()[:3] == ["enable f16;", "a", "e"]
    with pytest.raises(ValueError, match="needs the define N"):
        preprocess(src, {"X": True})
    with pytest.raises(ValueError, match="#if without #endif"):
        preprocess("#if X\n", {})
    library = {"lib": "fn f() -> FLOAT { return ${N}.0; }"}
    assert "fn f() -> f32 { return 3.0; }" in preprocess("#include lib", {"N": 3}, library.__getitem__)
    assert "fn f" not in preprocess("#if X\n#include lib\n#endif", {}, library.__getitem__)


def test_preprocessor_repeats_a_for_block_with_its_index() -> None:
    src = "#for i N\na[${i}] = ${i}u * ${W};\n#for j 2\n#if X\nb[${i}][${j}];\n#endif\n#endfor\n#endfor\nend"
    assert preprocess(src, {"N": 2, "W": 5, "X": True}).split("\n")[:-1] == [
        "a[0] = 0u * 5;",
        "b[0][0];",
        "b[0][1];",
        "a[1] = 1u * 5;",
        "b[1][0];",
        "b[1][1];",
        "end",
    ]
    assert preprocess(src, {"N": 0, "W": 5}).strip() == "end"
    assert preprocess("#if X\n#for i MISSING\nx\n#endfor\n#endif\ny", {}).strip() == "y"
    with pytest.raises(ValueError, match="#for without #endfor"):
        preprocess("#for i 2\nx", {})
    with pytest.raises(ValueError, match="#endfor without #for"):
        preprocess("x\n#endfor", {})
    with pytest.raises(ValueError, match="a number or a define"):
        preprocess("#for i MISSING\nx\n#endfor", {})


@pytest.mark.parametrize(
    ("m", "n", "k"), [(1, 1, 1), (3, 17, 33), (37, 50, 70), (64, 48, 16), (130, 131, 37)]
)
@pytest.mark.parametrize(("act", "w_kn"), [("", False), ("gelu", False), ("tanh", True), ("", True)])
def test_matmul(gpu: GpuDevice, m: int, n: int, k: int, act: str, w_kn: bool) -> None:
    a, w, bias = randn(m, k), randn(n, k), randn(n)
    c = gpu.buffer(m * n * 4)
    wb = up(gpu, w.T if w_kn else w)
    got = run(gpu, lambda r: ops.matmul(r, up(gpu, a), wb, up(gpu, bias), c, m, n, k, act, w_kn), c, (m, n))
    want = a @ w.T + bias
    if act == "gelu":
        erf = np.vectorize(math.erf)
        want = 0.5 * want * (1 + erf(want / math.sqrt(2)))
    elif act == "tanh":
        want = np.tanh(want)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_matmul_rows_do_not_depend_on_the_batch(gpu: GpuDevice) -> None:
    """Batch invariance: a row alone (the few-rows kernel) and among 99 others (the tiled one, in
    its second tile of rows) come out bit-identical."""
    k, n, m = 97, 70, 100
    a, w, bias = randn(m, k), randn(n, k), randn(n)
    wb, bb = up(gpu, w), up(gpu, bias)
    one, many = gpu.buffer(n * 4), gpu.buffer(m * n * 4)
    alone = run(gpu, lambda r: ops.matmul(r, up(gpu, a[-1:]), wb, bb, one, 1, n, k), one, (1, n))
    batched = run(gpu, lambda r: ops.matmul(r, up(gpu, a), wb, bb, many, m, n, k), many, (m, n))
    assert np.array_equal(alone[0], batched[-1])


@pytest.mark.parametrize("tile", ops.MATMUL_TILES, ids=tune.tile_name)
# (200, 72, 33, True): W [K, N] read 4 columns a load (N a multiple of 4)
@pytest.mark.parametrize(
    ("m", "n", "k", "w_kn"), [(137, 131, 45, False), (200, 70, 33, True), (200, 72, 33, True)]
)
def test_every_matmul_tiling_gives_the_same_bits(
    gpu: GpuDevice, tile: ops.MatmulTile, m: int, n: int, k: int, w_kn: bool
) -> None:
    """Each tiling a device may choose, on shapes spanning several of its tiles and ending inside
    one, both weight layouts (the second with f16 weights where the adapter has them): right against
    numpy and bit-identical to the default tiling (each output sums k in the same order)."""
    half = w_kn and gpu.f16
    a, w, bias = randn(m, k), randn(n, k), randn(n)
    stored = np.ascontiguousarray(w.T if w_kn else w)
    wb = up(gpu, stored.astype(np.float16) if half else stored)
    ab, bb = up(gpu, a), up(gpu, bias)

    def product(t: ops.MatmulTile) -> np.ndarray:
        c = gpu.buffer(m * n * 4)
        return run(
            gpu, lambda r: ops.matmul(r, ab, wb, bb, c, m, n, k, "gelu", w_kn, half, tile=t), c, (m, n)
        )

    got, default = product(tile), product(ops.MATMUL_TILES[0])
    used = w.astype(np.float16).astype(np.float32) if half else w
    want = a @ used.T + bias
    want = 0.5 * want * (1 + np.vectorize(math.erf)(want / math.sqrt(2)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.array_equal(got, default)


@pytest.mark.parametrize(("n", "k"), [(1, 4), (33, 100), (300, 1028)])
def test_gemv(gpu: GpuDevice, n: int, k: int) -> None:
    w, x, bias = randn(n, k), randn(k), randn(n)
    y = gpu.buffer(n * 4)
    got = run(gpu, lambda r: ops.gemv(r, up(gpu, w), up(gpu, x), up(gpu, bias), y, n, k), y, (n,))
    np.testing.assert_allclose(got, w @ x + bias, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("rows", "d"), [(1, 3), (5, 384), (7, 1000)])
@pytest.mark.parametrize("residual", [False, True])
def test_layernorm(gpu: GpuDevice, rows: int, d: int, residual: bool) -> None:
    x, r, g, b = randn(rows, d), randn(rows, d), randn(d), randn(d)
    xb, y = up(gpu, x), gpu.buffer(rows * d * 4)
    res = up(gpu, r) if residual else None
    got = run(
        gpu, lambda rec: ops.layernorm(rec, xb, up(gpu, g), up(gpu, b), y, rows, d, 1e-12, res), y, (rows, d)
    )
    v = x + r if residual else x
    want = (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-12) * g + b
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    if residual:  # the residual stream is updated in place
        np.testing.assert_allclose(
            np.frombuffer(asyncio.run(gpu.read(xb)), np.float32).reshape(rows, d), v, atol=1e-6
        )


@pytest.mark.parametrize("mode", ["l2", "softmax", "rms", "rms1"])
def test_rownorm(gpu: GpuDevice, mode: str) -> None:
    rows, d = 6, 333
    x, w = randn(rows, d), randn(d)
    y = gpu.buffer(rows * d * 4)
    got = run(gpu, lambda r: ops.rownorm(r, up(gpu, x), y, rows, d, mode, up(gpu, w), 1e-6), y, (rows, d))
    if mode == "l2":
        want = x / np.linalg.norm(x, axis=-1, keepdims=True)
    elif mode == "softmax":
        e = np.exp(x - x.max(-1, keepdims=True))
        want = e / e.sum(-1, keepdims=True)
    else:
        want = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * (w + (mode == "rms1"))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("b", "s", "h", "dh"), [(1, 1, 1, 8), (3, 19, 4, 16), (2, 300, 12, 32)])
def test_attention_with_padding(gpu: GpuDevice, b: int, s: int, h: int, dh: int) -> None:
    q, k, v = randn(b, s, h * dh), randn(b, s, h * dh), randn(b, s, h * dh)
    lengths = [s, *[max(1, s - 3 * i - 1) for i in range(1, b)]]
    mask = np.array([[1.0] * n + [0.0] * (s - n) for n in lengths], dtype=np.float32)
    out = gpu.buffer(b * s * h * dh * 4)
    qkv, mb = up(gpu, np.concatenate([q, k, v], axis=-1)), up(gpu, mask)  # a token's q, k, v side by side
    got = run(gpu, lambda r: ops.attention(r, qkv, mb, out, b, s, h, dh), out, (b, s, h * dh))  # type: ignore[arg-type]
    qh, kh, vh = (t.reshape(b, s, h, dh).transpose(0, 2, 1, 3) for t in (q, k, v))
    scores = qh @ kh.transpose(0, 1, 3, 2) / math.sqrt(dh) + np.where(mask > 0, 0, -np.inf)[:, None, None, :]
    p = np.exp(scores - scores.max(-1, keepdims=True))
    want = (p / p.sum(-1, keepdims=True) @ vh).transpose(0, 2, 1, 3).reshape(b, s, h * dh)
    for i, n in enumerate(lengths):  # padded query rows are never read
        np.testing.assert_allclose(got[i, :n], want[i, :n], rtol=1e-4, atol=1e-4)


def test_embedding_gather(gpu: GpuDevice) -> None:
    vocab, d, t = 50, 70, 9
    word, pos, typ = randn(vocab, d), randn(16, d), randn(2, d)
    ids = rng.integers(0, vocab, t).astype(np.uint32)
    positions = np.arange(t, dtype=np.uint32)
    types = (np.arange(t) > 4).astype(np.uint32)
    out = gpu.buffer(t * d * 4)
    tables = [up(gpu, x) for x in (ids, positions, types, word, pos, typ)]
    got = run(gpu, lambda r: ops.embed(r, *tables, out, t, d), out, (t, d))  # type: ignore[arg-type]
    np.testing.assert_allclose(got, word[ids] + pos[positions] + typ[types], rtol=1e-6)


def test_token_grids_fold_past_the_workgroup_limit(gpu: GpuDevice) -> None:
    """More tokens than a grid dimension holds (65,535: batch 256 of 512 tokens is 131,072) fold into z."""
    vocab, d, t = 40, 4, 65_535 + 300
    word = randn(vocab, d)
    ids = rng.integers(0, vocab, t).astype(np.uint32)
    zeros = np.zeros(t, np.uint32)
    out = gpu.buffer(t * d * 4)
    tables = [up(gpu, x) for x in (ids, zeros, zeros, word, np.zeros((1, d), np.float32))]
    got = run(gpu, lambda r: ops.embed(r, *tables, tables[-1], out, t, d), out, (t, d))  # type: ignore[arg-type]
    np.testing.assert_array_equal(got, word[ids])
    gathered = gpu.buffer(t * d * 4)
    got = run(gpu, lambda r: ops.gather(r, tables[0], tables[3], gathered, t, d), gathered, (t, d))  # type: ignore[arg-type]
    np.testing.assert_array_equal(got, word[ids])


@pytest.mark.parametrize("how", ["mean", "cls", "max", "last"])
def test_pooling(gpu: GpuDevice, how: str) -> None:
    b, s, d = 3, 11, 130
    h = randn(b, s, d)
    mask = np.zeros((b, s), np.float32)
    for i, n in enumerate((11, 4, 1)):
        mask[i, :n] = 1
    out = gpu.buffer(b * d * 4)
    got = run(gpu, lambda r: ops.pool(r, up(gpu, h), up(gpu, mask), out, b, s, d, how), out, (b, d))
    m = mask[..., None]
    want = {
        "mean": (h * m).sum(1) / m.sum(1),
        "cls": h[:, 0],
        "max": np.where(m > 0, h, -np.inf).max(1),
        "last": h[np.arange(b), mask.sum(1).astype(int) - 1],
    }[how]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_recording_replays_with_new_inputs(gpu: GpuDevice) -> None:
    """Recorded once, submitted twice: the second run reads what was written into the same buffers."""
    m, n, k = 5, 7, 9
    a, w, bias = randn(m, k), randn(n, k), randn(n)
    ab, c = up(gpu, a), gpu.buffer(m * n * 4)
    rec = gpu.record()
    ops.matmul(rec, ab, up(gpu, w), up(gpu, bias), c, m, n, k)
    gpu.submit(rec)
    first = np.frombuffer(asyncio.run(gpu.read(c)), np.float32).reshape(m, n)
    gpu.write(ab, (2 * a).tobytes())
    gpu.submit(rec)
    second = np.frombuffer(asyncio.run(gpu.read(c)), np.float32).reshape(m, n)
    np.testing.assert_allclose(first, a @ w.T + bias, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(second, 2 * a @ w.T + bias, rtol=1e-4, atol=1e-4)
    assert len(rec.dispatches) == 1


def test_a_dispatch_with_the_wrong_buffers_is_refused(gpu: GpuDevice) -> None:
    rec = gpu.record()
    with pytest.raises(ValueError, match="takes 4 buffers, not 2"):
        rec.dispatch(gpu.kernel("matmul", SKINNY=True), [gpu.buffer(4), gpu.buffer(4)], (1, 1, 1), (1, 1, 1))


def test_onnx_weights_are_read_without_onnx() -> None:
    """The protobuf walk finds what onnx itself finds: names, shapes, bytes, node attributes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from ferrousforge.gpu import onnx_weights

    w, shape = randn(3, 5), np.array([0, 0, 12, 32], dtype=np.int64)
    node = helper.make_node("LayerNormalization", ["x", "w", "b"], ["y"], epsilon=1e-12, axis=-1)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(shape, "split_shape")],
    )
    data = onnx.helper.make_model(graph).SerializeToString()
    found = onnx_weights.read(data)
    t = found.tensors["w"]
    assert t.dims == (3, 5) and t.data_type == onnx_weights.FLOAT
    assert np.array_equal(np.frombuffer(data[t.offset : t.offset + t.length], np.float32).reshape(3, 5), w)
    assert found.int64s(data, "split_shape") == [0, 0, 12, 32]
    (ln,) = found.nodes
    assert ln.op_type == "LayerNormalization" and abs(float(ln.attributes["epsilon"]) - 1e-12) < 1e-18
    assert ln.attributes["axis"] == -1


@pytest.mark.parametrize(("m", "n", "k", "w_kn"), [(3, 17, 34, False), (37, 50, 70, True), (5, 52, 70, True)])
def test_matmul_with_f16_weights(gpu: GpuDevice, m: int, n: int, k: int, w_kn: bool) -> None:
    """Weights converted to f16 on the GPU (to_half), products summed in f32."""
    if not gpu.f16:
        pytest.skip("this adapter has no shader-f16")
    a, w, bias = randn(m, k), randn(n, k), randn(n)
    stored = np.ascontiguousarray(w.T if w_kn else w)
    half, c = gpu.buffer(stored.size * 2), gpu.buffer(m * n * 4)
    converted = run(
        gpu, lambda r: ops.to_half(r, up(gpu, stored), half, stored.size), half, stored.shape, np.float16
    )
    assert np.array_equal(converted, stored.astype(np.float16))
    got = run(
        gpu, lambda r: ops.matmul(r, up(gpu, a), half, up(gpu, bias), c, m, n, k, "", w_kn, True), c, (m, n)
    )
    want = a @ w.astype(np.float16).astype(np.float32).T + bias
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def gguf_blocks(kind: str, rows: int, cols: int) -> np.ndarray:
    """Random blocks of a GGUF type with finite, small scales (f16 fields set by hand)."""
    import gguf

    qtype = gguf.GGMLQuantizationType[kind]
    per, size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(rows * cols // per, size), dtype=np.uint8)
    scale = np.frombuffer(np.float16(0.01).tobytes(), np.uint8)
    if kind == "F16":
        return randn(rows, cols).astype(np.float16).view(np.uint8).reshape(rows, -1)
    if kind == "BF16":  # the upper halves of f32 values
        return (randn(rows, cols).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    negative = np.frombuffer(np.float16(-0.02).tobytes(), np.uint8)
    if kind in ("Q4_0", "Q5_0", "Q8_0", "IQ4_NL", "IQ4_XS"):
        blocks[:, 0:2] = scale
    elif kind in ("Q4_1", "Q5_1", "Q4_K", "Q5_K"):
        blocks[:, 0:2], blocks[:, 2:4] = scale, negative
    elif kind == "Q2_K":
        blocks[:, 80:82], blocks[:, 82:84] = scale, negative
    elif kind == "Q3_K":
        blocks[:, 108:110] = scale
    elif kind == "Q6_K":
        blocks[:, 208:210] = scale
    return blocks.reshape(rows, -1)


@pytest.mark.parametrize("kind", ops.GGUF_BLOCKS)
def test_gguf_weights_dequantize_as_llama_cpp_lays_them_out(gpu: GpuDevice, kind: str) -> None:
    import gguf

    rows, cols = 3, 512
    raw = gguf_blocks(kind, rows, cols)
    want = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[kind]).reshape(rows, cols)
    out = gpu.buffer(rows * cols * 4)
    got = run(gpu, lambda r: ops.dequantize(r, up(gpu, raw), out, rows * cols, kind), out, (rows, cols))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


# -- decoder kernels (toward GGUF generation on the compute layer) -----------------------------------
@pytest.mark.parametrize(
    ("sizes", "ties"),
    [
        ((262_151,), (5, 4096, 200_000)),  # a Gemma-sized vocabulary: chunks, then their results
        ((1_000,), (3, 999)),  # one chunk
        ((4_097,), (0, 4096)),
        ((70_000, 70_000, 3_000), (69_999, 70_000, 139_999)),  # slices, ties across them
    ],
)
def test_argmax_takes_the_first_of_equal_maxima(
    gpu: GpuDevice, sizes: tuple[int, ...], ties: tuple[int, ...]
) -> None:
    rows = 3
    x = randn(rows, sum(sizes))
    x[1, list(ties)] = 50.0
    parts, first = [], 0
    for size in sizes:
        parts.append((up(gpu, np.ascontiguousarray(x[:, first : first + size])), size, first))
        first += size
    out = gpu.buffer(rows * 8)
    got = run(gpu, lambda r: ops.argmax(r, parts, out, rows), out, (rows, 2), np.uint32)  # type: ignore[arg-type]
    assert got[:, 0].tolist() == [int(x[0].argmax()), ties[0], int(x[2].argmax())]
    assert got[:, 1].view(np.float32).tolist() == x.max(1).tolist()


@pytest.mark.parametrize("n", [300, 9_000])
def test_argmax_chains_the_winner_into_the_next_step(gpu: GpuDevice, n: int) -> None:
    """A chained pass's argmax: the winner becomes the row's next token id, its position moves on, and
    the step's tokens are kept at step · rows + row."""
    rows, step = 2, 1
    x = randn(rows, n)
    ids, pos = up(gpu, np.array([5, 6], np.uint32)), up(gpu, np.array([7, 20], np.uint32))
    tokens, out = up(gpu, np.full(3 * rows, 9, np.uint32)), gpu.buffer(rows * 8)
    rec = gpu.record()
    ops.argmax(rec, [(up(gpu, x), n, 0)], out, rows, chain=(ids, pos, tokens, step))  # type: ignore[arg-type]
    gpu.submit(rec)

    def read(buffer: object) -> list[int]:
        return np.frombuffer(asyncio.run(gpu.read(buffer)), np.uint32).tolist()  # type: ignore[arg-type]

    want = x.argmax(1).tolist()
    assert read(ids) == want and read(pos) == [8, 21]
    assert read(tokens) == [9, 9, *want, 9, 9]


@pytest.fixture(params=[1, 3, 4, ops.ATTENTION_UNROLL], ids=lambda n: f"unroll{n}")
def attention_unroll(gpu: GpuDevice, request: pytest.FixtureRequest) -> Iterator[int]:
    """causal.wgsl loading 1 key or value at a time a thread (a CPU adapter's), 3, 4 or a GPU's 16
    (keys: no more than a thread's share of a key)."""
    gpu.tuned["attention_unroll"] = request.param
    yield request.param
    gpu.tuned.pop("attention_unroll")


@pytest.mark.parametrize(("window", "d"), [(0, 64), (4, 64), (0, 256), (70, 32), (0, 20)])
def test_causal_attention_over_the_cache_with_grouped_heads(
    gpu: GpuDevice, window: int, d: int, attention_unroll: int
) -> None:
    """Against numpy; loading several keys or values at once changes no bit."""
    t, hq, hkv, cached = 3, 4, 2, 150  # 150 keys: several 64-key chunks of the online softmax
    q, k, v = randn(t, hq, d), f16(randn(cached + 20, hkv, d)), f16(randn(cached + 20, hkv, d))
    pos = np.array([5, 6, 149], dtype=np.uint32)
    base = np.array([20, 0, 20], dtype=np.uint32)  # rows 0 and 2 belong to a sequence starting at row 20
    out = gpu.buffer(t * hq * d * 4)
    args = [up(gpu, a) for a in (q, k.astype(np.float16), v.astype(np.float16), pos, base)]  # (an f16 cache)
    got = run(gpu, lambda r: ops.causal_attention(r, *args, out, t, hq, hkv, d, window), out, (t, hq, d))  # type: ignore[arg-type]
    gpu.tuned["attention_unroll"] = 1
    alone = run(gpu, lambda r: ops.causal_attention(r, *args, out, t, hq, hkv, d, window), out, (t, hq, d))  # type: ignore[arg-type]
    gpu.tuned["attention_unroll"] = attention_unroll
    assert got.tobytes() == alone.tobytes()
    want = np.zeros_like(q)
    for i, (p, b) in enumerate(zip(pos, base, strict=True)):
        first = b + (max(0, int(p) + 1 - window) if window else 0)
        for h in range(hq):
            keys, values = k[first : b + p + 1, h // (hq // hkv)], v[first : b + p + 1, h // (hq // hkv)]
            scores = keys @ q[i, h] / math.sqrt(d)
            w = np.exp(scores - scores.max())
            want[i, h] = (w / w.sum()) @ values
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("sizes", "rows"), [((353,), 2), ((50_000,), 1), ((70_000, 70_000, 3_000), 2)])
def test_top_candidates_over_vocabulary_slices(gpu: GpuDevice, sizes: tuple[int, ...], rows: int) -> None:
    """The 128 largest logits of each row, best first, lower id first on ties, across slices."""
    x = np.round(randn(rows, sum(sizes)) * 4, 1)  # rounded: many equal values
    parts, first = [], 0
    for n in sizes:
        parts.append((up(gpu, x[:, first : first + n]), n, first))
        first += n
    rec = gpu.record()
    out = ops.top_candidates(rec, parts, rows)  # type: ignore[arg-type]
    gpu.submit(rec)
    raw = np.frombuffer(asyncio.run(gpu.read(out, rows * ops.TOP_K * 8)), dtype=np.uint32).reshape(
        rows, -1, 2
    )
    for r in range(rows):
        want = sorted(range(x.shape[1]), key=lambda i: (-x[r, i], i))[: ops.TOP_K]
        got = [int(i) for i in raw[r, :, 0] if i != 0xFFFFFFFF]
        assert got == want[: len(got)] and len(got) == min(ops.TOP_K, x.shape[1])
        assert np.array_equal(raw[r, : len(got), 1].view(np.float32), x[r, want[: len(got)]])


def halves(gpu: GpuDevice, w: np.ndarray) -> object:
    """w as the f16 buffer the decoder keeps (``to_half`` on the GPU)."""
    packed = gpu.buffer(w.size * 2)
    rec = gpu.record()
    ops.to_half(rec, up(gpu, w), packed, w.size)  # type: ignore[arg-type]
    gpu.submit(rec)
    return packed


def q8_values(w: np.ndarray) -> np.ndarray:
    """What 8-bit rows hold: llama.cpp's Q8_0 of each block of 32 (d = max |w| / 127, round)."""
    blocks = w.reshape(-1, 32).astype(np.float32)
    d = np.abs(blocks).max(1, keepdims=True) / np.float32(127)
    q = np.round(blocks * np.where(d > 0, np.float32(1) / d, 0)).clip(-127, 127)
    return (q * d).reshape(w.shape).astype(np.float32)


def packed_blocks(gpu: GpuDevice, kind: str, rows: int, k: int, row0: int = 0) -> tuple[np.ndarray, object]:
    """Random GGUF blocks of a 4-bit (ops.Q4_KINDS) or 8-bit (ops.Q8_KINDS) type: their values and
    the GPU's rows of them (from row ``row0`` of the buffer on, after rows left unwritten)."""
    import gguf

    raw = gguf_blocks(kind, rows, k)
    packed = gpu.buffer(ops.repacked_bytes(row0 + rows, k, kind))
    rec = gpu.record()
    ops.repack(rec, up(gpu, raw), packed, rows, k, kind, row0)  # type: ignore[arg-type]
    gpu.submit(rec)
    return gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[kind]).reshape(rows, k), packed


@pytest.mark.parametrize("kind", ops.Q4_KINDS + ops.Q8_KINDS)
def test_packed_rows_hold_the_files_values_exactly(gpu: GpuDevice, kind: str) -> None:
    """Q4_0, Q4_1 and Q4_K blocks repacked in 4 bits (quant4.wgsl), Q8_0 and Q5_0 in 8 (quant8.wgsl),
    read back by the embedding gather: the values llama.cpp's dequantization gives, bit for bit;
    stacked after other rows (row0)."""
    four = kind in ops.Q4_KINDS
    flags = {"q4": four, "q8": not four}
    rows, k = 5, 512
    values, packed = packed_blocks(gpu, kind, rows, k)
    ids, out = up(gpu, np.arange(rows, dtype=np.uint32)), gpu.buffer(rows * k * 4)
    got = run(gpu, lambda r: ops.gather(r, ids, packed, out, rows, k, **flags), out, (rows, k))  # type: ignore[arg-type]
    np.testing.assert_array_equal(got, values)
    values, stacked = packed_blocks(gpu, kind, 2, k, row0=rows)
    last = up(gpu, np.array([rows + 1], dtype=np.uint32))
    got = run(gpu, lambda r: ops.gather(r, last, stacked, out, 1, k, **flags), out, (k,))  # type: ignore[arg-type]
    np.testing.assert_array_equal(got[:k], values[1])


def test_packed_weights_are_checked_before_they_are_recorded(gpu: GpuDevice) -> None:
    rec, buf = gpu.record(), gpu.buffer(4096)
    with pytest.raises(ValueError, match="whole blocks"):  # a Q4_K block is 256 values of one row
        ops.to_q4(rec, buf, buf, 2, 96, "Q4_K")
    with pytest.raises(ValueError, match="whole blocks"):
        ops.to_q4(rec, buf, buf, 2, 96, "Q8_0")
    with pytest.raises(ValueError, match="whole blocks"):
        ops.blocks_to_q8(rec, buf, buf, 2, 96, "Q4_0")
    with pytest.raises(ValueError, match="not several"):
        ops.linear(rec, buf, buf, buf, 1, 4, 64, q8=True, q4=True)
    with pytest.raises(ValueError, match="multiple of 32"):
        ops.linear(rec, buf, buf, buf, 1, 4, 40, q4=True)
    assert ops.linear_lanes(gpu, 100) == (16 if gpu.software else 32)
    limit = gpu.limits.get("max_compute_workgroups_per_dimension", 65535)
    gpu.tuned["linear_lanes"] = 128  # 2 rows a workgroup: past the grid's limit, 4 rows (64 threads)
    try:
        assert ops.linear_lanes(gpu, 2 * limit) == 128
        assert ops.linear_lanes(gpu, 2 * limit + 1) == 64
        gpu.tuned["linear_lanes"] = 48
        with pytest.raises(ValueError, match="16, 32, 64 or 128 threads"):
            ops.linear(rec, buf, buf, buf, 1, 4, 64)
    finally:
        gpu.tuned.pop("linear_lanes")
    assert ops.attention_unroll(gpu, 256)["UNROLL"] == (1 if gpu.software else ops.ATTENTION_UNROLL)
    gpu.tuned["attention_unroll"] = 16  # a thread's key loads: no more than its share of the dims
    try:
        assert [ops.attention_unroll(gpu, d)["KUNROLL"] for d in (256, 64, 20)] == [16, 4, 2]
        gpu.tuned["attention_unroll"] = 17
        with pytest.raises(ValueError, match="1 to 16"):
            ops.causal_attention(rec, buf, buf, buf, buf, buf, buf, 1, 4, 2, 64, 0)
    finally:
        gpu.tuned.pop("attention_unroll")
    assert not rec.dispatches


def eight_bits(gpu: GpuDevice, w: np.ndarray) -> object:
    rows, k = w.shape
    packed = gpu.buffer(ops.q8_bytes(rows, k))
    rec = gpu.record()
    ops.to_q8(rec, up(gpu, w), packed, rows, k)  # type: ignore[arg-type]
    gpu.submit(rec)
    return packed


def held(gpu: GpuDevice, form: str, rows: int, k: int) -> tuple[np.ndarray, object]:
    """A random [rows, k] matrix as the decoder holds it in ``form`` ("f32", "f16", "q8", or "q4" from
    a Q4_1 file's blocks): the values it holds and its buffer."""
    if form == "q4":
        return packed_blocks(gpu, "Q4_1", rows, k)
    w = randn(rows, k)
    if form == "f16":
        return w.astype(np.float16).astype(np.float32), halves(gpu, w)
    if form == "q8":
        return q8_values(w), eight_bits(gpu, w)
    return w, up(gpu, w)


def rms(x: np.ndarray, w: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    return x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + eps) * w


@pytest.fixture(params=[16, 32, 128], ids=lambda n: f"lanes{n}")
def lanes(gpu: GpuDevice, request: pytest.FixtureRequest) -> Iterator[int]:
    """linear.wgsl with 16 threads a weight row (16 rows a workgroup: a CPU adapter's), 32 (8 rows: a
    GPU's) or 128 (2 rows)."""
    gpu.tuned["linear_lanes"] = request.param
    yield request.param
    gpu.tuned.pop("linear_lanes")


@pytest.mark.parametrize("form", ["f32", "f16", "q8", "q4"])
@pytest.mark.parametrize("m", [1, 3, 13])
def test_linear_and_its_fused_forms(gpu: GpuDevice, form: str, m: int, lanes: int) -> None:
    """The decoder's product against numpy: plain (weights from a row offset), after an RMSNorm, gated
    (SwiGLU, GeGLU), split into three outputs, accumulating; 13 rows take two workgroups along y;
    weights in f32, f16 or 8 bits; 16, 32 or 128 threads a weight row."""
    half, q8, q4 = form == "f16", form == "q8", form == "q4"
    if half and not gpu.f16:
        pytest.skip("no shader-f16")
    k, n = 96, 37  # n not a multiple of the 16 rows a workgroup takes
    x, nw = randn(m, k), randn(k)
    wq, wb = held(gpu, form, 3 * n, k)
    tol = {"rtol": 1e-4, "atol": 1e-4}

    def product(record, shape: tuple[int, ...], out: object | None = None) -> np.ndarray:  # type: ignore[no-untyped-def]
        out = out or gpu.buffer(int(np.prod(shape)) * 4)
        return run(gpu, lambda r: record(r, out), out, shape)

    xb = up(gpu, x)
    got = product(lambda r, o: ops.linear(r, xb, wb, o, m, n, k, half=half, q8=q8, q4=q4, n0=n), (m, n))
    np.testing.assert_allclose(got, x @ wq[n : 2 * n].T, **tol)
    normed = rms(x, nw)
    got = product(
        lambda r, o: ops.linear(r, xb, wb, o, m, n, k, half=half, q8=q8, q4=q4, norm=up(gpu, nw)), (m, n)
    )
    np.testing.assert_allclose(got, normed @ wq[:n].T, **tol)
    g, u = x @ wq[:n].T, x @ wq[n : 2 * n].T
    for gate, act in (
        ("silu", g / (1 + np.exp(-g))),
        ("gelu", 0.5 * g * (1 + np.tanh(0.7978845608028654 * (g + 0.044715 * g**3)))),
    ):
        forms = {"half": half, "q8": q8, "q4": q4}
        got = product(lambda r, o: ops.linear(r, xb, wb, o, m, n, k, **forms, gate=gate), (m, n))  # noqa: B023
        np.testing.assert_allclose(got, act * u, **tol)
    parts = [gpu.buffer(m * width * 4) for width in (20, 10)]
    split = ((parts[0], 20), (parts[1], 10))
    got = product(
        lambda r, o: ops.linear(r, xb, wb, o, m, 2 * n, k, half=half, q8=q8, q4=q4, split=split),
        (m, 2 * n - 30),
    )
    want = x @ wq[: 2 * n].T
    np.testing.assert_allclose(got, want[:, : 2 * n - 30], **tol)
    for part, (lo, hi) in zip(parts, ((2 * n - 30, 2 * n - 10), (2 * n - 10, 2 * n)), strict=True):
        np.testing.assert_allclose(
            np.frombuffer(asyncio.run(gpu.read(part)), np.float32).reshape(m, -1), want[:, lo:hi], **tol
        )  # type: ignore[arg-type]
    y0 = randn(m, n)
    got = product(
        lambda r, o: ops.linear(r, xb, wb, o, m, n, k, half=half, q8=q8, q4=q4, accumulate=True),
        (m, n),
        up(gpu, y0),
    )
    np.testing.assert_allclose(got, y0 + x @ wq[:n].T, **tol)
    pending, post, x_out = randn(m, k), randn(k), gpu.buffer(m * k * 4)
    stacked, fold = up(gpu, np.concatenate([nw, post])), (up(gpu, pending), x_out)
    got = product(
        lambda r, o: ops.linear(r, xb, wb, o, m, n, k, half=half, q8=q8, q4=q4, norm=stacked, residual=fold),
        (m, n),
    )
    stream = x + rms(pending, post)  # the residual stream with the pending product's post-norm added
    np.testing.assert_allclose(got, rms(stream, nw) @ wq[:n].T, **tol)
    written = np.frombuffer(asyncio.run(gpu.read(x_out)), np.float32).reshape(m, k)
    np.testing.assert_allclose(written, stream, **tol)


@pytest.mark.parametrize("residual", [False, True])
def test_linear_rows_do_not_depend_on_the_batch(gpu: GpuDevice, residual: bool, lanes: int) -> None:
    """Each row of a 20-row product (three workgroups along y) has the bits it has alone or among 3:
    the reduction order is the kernel's, not the batch's (norm and gate included; with a pending
    post-norm folded in, on rows longer than the 256 threads that reduce it)."""
    k, n = (1100, 20) if residual else (200, 50)
    x, w, pending = randn(20, k), randn(2 * n, k), randn(20, k)
    nw = up(gpu, randn(2 * k if residual else k))
    wb = halves(gpu, w) if gpu.f16 else up(gpu, w)

    def rows(first: int, m: int) -> bytes:
        out = gpu.buffer(m * n * 4)
        xb = up(gpu, x[first : first + m])
        fold = (up(gpu, pending[first : first + m]), gpu.buffer(m * k * 4)) if residual else None
        return run(
            gpu,
            lambda r: ops.linear(r, xb, wb, out, m, n, k, half=gpu.f16, norm=nw, gate="gelu", residual=fold),
            out,
            (m, n),
        ).tobytes()

    together = rows(0, 20)
    row = n * 4
    assert rows(7, 1) == together[7 * row : 8 * row]
    assert rows(17, 3) == together[17 * row : 20 * row]
    assert rows(0, 1) == together[:row]


@pytest.mark.parametrize("q4", [False, True])
@pytest.mark.parametrize("m", [1, 3])
def test_linear_loads_at_once_do_not_change_a_bit(gpu: GpuDevice, q4: bool, m: int, lanes: int) -> None:
    """However many of a lane's weight groups linear.wgsl loads before summing them (1, 2, 4 or 8),
    its sums run in one order: the same bits, on a row length that leaves a remainder (one row: a
    decode step's staged tile; three: smaller tiles)."""
    k, n = 1120, 24  # 280 groups of 4: not a multiple of any lanes × loads
    x, pending, nw = randn(m, k), randn(m, k), up(gpu, randn(2 * k))
    half = gpu.f16 and not q4
    wb = held(gpu, "q4" if q4 else "f16" if half else "f32", 2 * n, k)[1]
    xb, fold = up(gpu, x), (up(gpu, pending), gpu.buffer(m * k * 4))

    def product(unroll: int) -> bytes:
        gpu.tuned["linear_unroll"] = unroll
        out = gpu.buffer(m * n * 4)
        forms = {"half": half, "q4": q4, "norm": nw, "gate": "gelu", "residual": fold}
        return run(gpu, lambda r: ops.linear(r, xb, wb, out, m, n, k, **forms), out, (m, n)).tobytes()

    try:
        results = {unroll: product(unroll) for unroll in (1, 2, 4, 8)}
        gpu.tuned["linear_unroll"] = 3
        with pytest.raises(ValueError, match="1, 2, 4 or 8 groups"):
            ops.linear(gpu.record(), xb, wb, xb, m, n, k)
    finally:
        gpu.tuned.pop("linear_unroll")
    assert len(set(results.values())) == 1


@pytest.mark.parametrize("form", ["f32", "f16", "q8", "q4"])
def test_attention_applies_each_heads_columns_of_the_output_projection(
    gpu: GpuDevice, form: str, attention_unroll: int
) -> None:
    """With ``project`` each head's output comes out multiplied by its columns of W_o (Llama's output
    projection, f32, f16, 8 or 4 bits); the heads' shares add up to the whole product."""
    if form == "f16" and not gpu.f16:
        pytest.skip("no shader-f16")
    t, hq, hkv, d, width, cached = 2, 4, 2, 64, 300, 70  # 300 rows: two rows a thread for some
    q, k, v = randn(t, hq, d), f16(randn(cached, hkv, d)), f16(randn(cached, hkv, d))
    pos, base = np.array([40, 69], np.uint32), np.array([0, 0], np.uint32)
    wq, wb = held(gpu, form, width, hq * d)
    args = [up(gpu, a) for a in (q, k.astype(np.float16), v.astype(np.float16), pos, base)]
    out = gpu.buffer(t * hq * width * 4)
    project = ops.OutputShares(wb, width, form)  # type: ignore[arg-type]

    def record(rec: object, splits: int = 1) -> None:
        ops.causal_attention(rec, *args, out, t, hq, hkv, d, project=project, splits=splits)  # type: ignore[arg-type]

    got = run(gpu, record, out, (t, hq, width))
    for splits in (2, 7):  # the rows in parts, a workgroup each: the same bits
        parts = run(gpu, partial(record, splits=splits), out, (t, hq, width))
        assert parts.tobytes() == got.tobytes()
    for i in range(t):
        for h in range(hq):
            keys, values = k[: pos[i] + 1, h // 2], v[: pos[i] + 1, h // 2]
            scores = keys @ q[i, h] / math.sqrt(d)
            weights = np.exp(scores - scores.max())
            head = weights / weights.sum() @ values
            np.testing.assert_allclose(got[i, h], wq[:, h * d : (h + 1) * d] @ head, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="multiple of 32"):
        ops.causal_attention(
            gpu.record(), *args, out, t, hq, hkv, 16, project=ops.OutputShares(wb, width, "q4")
        )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rows are split"):
        ops.causal_attention(gpu.record(), *args, out, t, hq, hkv, d, splits=2)  # type: ignore[arg-type]


@pytest.mark.parametrize("post_norm", [False, True], ids=["llama", "gemma"])
def test_linear_adds_the_shares_of_a_residual(gpu: GpuDevice, lanes: int, post_norm: bool) -> None:
    """The fold of the heads' shares: the input is x plus the pending product's shares (added in
    order; Gemma's through its post-norm), RMS-normalised; that sum is written to the stream's next
    buffer. A GPU's form (the shares loaded 4 at a time, with the weights) gives the same bits."""
    m, k, n, parts = 3, 96, 20, 6
    x, shares, nw, pw, w = randn(m, k), randn(m, parts, k), randn(k), randn(k), randn(2 * n, k)
    wb, xb, sb = up(gpu, w), up(gpu, x), up(gpu, shares)
    x_out, out = gpu.buffer(m * k * 4), gpu.buffer(m * n * 4)
    fold = {"residual": (sb, x_out), "parts": parts, "post_norm": post_norm}
    norms = up(gpu, np.concatenate([nw, pw]) if post_norm else nw)

    def record(rec: object) -> None:
        ops.linear(rec, xb, wb, out, m, n, k, norm=norms, gate="silu", **fold)  # type: ignore[arg-type]

    got = run(gpu, record, out, (m, n))
    stream = x + (rms(shares.sum(1), pw) if post_norm else shares.sum(1))
    g, u = rms(stream, nw) @ w[:n].T, rms(stream, nw) @ w[n:].T
    np.testing.assert_allclose(got, g / (1 + np.exp(-g)) * u, rtol=1e-4, atol=1e-4)
    written = np.frombuffer(asyncio.run(gpu.read(x_out)), np.float32).reshape(m, k)  # type: ignore[arg-type]
    np.testing.assert_allclose(written, stream, rtol=1e-5, atol=1e-5)
    gpu.tuned["linear_unroll"] = 4
    try:
        again = run(gpu, record, out, (m, n))
    finally:
        gpu.tuned.pop("linear_unroll")
    assert again.tobytes() == got.tobytes()
    with pytest.raises(ValueError, match="describe a residual input"):
        ops.linear(gpu.record(), xb, wb, out, m, n, k, parts=2)  # type: ignore[arg-type]


def f16(x: np.ndarray) -> np.ndarray:
    """Values as an f16 KV cache holds them."""
    return x.astype(np.float16).astype(np.float32)


def read_f16(gpu: GpuDevice, buffer: object, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(asyncio.run(gpu.read(buffer)), np.float16).astype(np.float32).reshape(shape)  # type: ignore[arg-type]


def rope_ref(x: np.ndarray, pos: np.ndarray, n_rot: int, base: float, neox: bool) -> np.ndarray:
    """RoPE on x[t, h, d] in float64 (llama.cpp's two pairings)."""
    want = x.astype(np.float64).copy()
    freqs = base ** (-2.0 * np.arange(n_rot // 2) / n_rot)
    angles = pos[:, None].astype(np.float64) * freqs  # [t, n_rot/2]
    c, s = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    if neox:
        a, b = x[..., : n_rot // 2], x[..., n_rot // 2 : n_rot]
        want[..., : n_rot // 2], want[..., n_rot // 2 : n_rot] = a * c - b * s, a * s + b * c
    else:
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        want[..., 0:n_rot:2], want[..., 1:n_rot:2] = a * c - b * s, a * s + b * c
    return want


@pytest.mark.parametrize(("neox", "form"), [(False, ""), (True, ""), (True, "q4"), (False, "f32")])
def test_attention_turns_new_keys_into_the_cache_and_attends(
    gpu: GpuDevice, neox: bool, form: str, attention_unroll: int
) -> None:
    """Gemma's attention from the pass's raw queries, keys and values (side by side, as the product
    gives them): every head RMS-normalised and rotated, keys and values written at each row's cache
    row (base + pos), and the attention over the cache numpy's, or with ``form`` each head's share of
    the output projection; one dispatch ("both", rows of distinct sequences) gives the bits of two
    ("cache", then "attend")."""
    t, hq, hkv, d, n_rot, theta, rows, width = 3, 4, 2, 64, 48, 10000.0, 256, 40
    q, k, v, qn, kn = randn(t, hq, d), randn(t, hkv, d), randn(t, hkv, d), randn(d), randn(d)
    qkv = np.concatenate([q.reshape(t, -1), k.reshape(t, -1), v.reshape(t, -1)], axis=1)
    pos, base = np.array([3, 70, 4], np.uint32), np.array([0, 64, 192], np.uint32)
    kc0, vc0 = f16(randn(rows, hkv, d)), f16(randn(rows, hkv, d))  # each sequence's earlier keys, values
    wq, wb = held(gpu, form, width, hq * d) if form else (None, None)
    project = ops.OutputShares(wb, width, form) if form else None  # type: ignore[arg-type]
    out_shape = (t, hq, width if form else d)

    def attend(modes: tuple[str, ...], splits: int = 1) -> list[np.ndarray]:
        qb, kc, vc = up(gpu, qkv), up(gpu, kc0.astype(np.float16)), up(gpu, vc0.astype(np.float16))
        out = gpu.buffer(int(np.prod(out_shape)) * 4)
        new = ops.NewKeys(up(gpu, np.concatenate([qn, kn])), n_rot, theta, 1e-6, neox)  # type: ignore[arg-type]
        rec = gpu.record()
        for mode in modes:
            ops.causal_attention(
                rec,
                qb,
                kc,
                vc,
                up(gpu, pos),
                up(gpu, base),
                out,
                t,
                hq,
                hkv,
                d,
                new=new,
                mode=mode,
                project=project if mode != "cache" else None,
                splits=splits if mode != "cache" else 1,
            )  # type: ignore[arg-type]
        gpu.submit(rec)
        got = np.frombuffer(asyncio.run(gpu.read(out)), np.float32)  # type: ignore[arg-type]
        assert np.array_equal(np.frombuffer(asyncio.run(gpu.read(qb)), np.float32), qkv.ravel())  # type: ignore[arg-type]
        return [got, read_f16(gpu, kc, kc0.shape), read_f16(gpu, vc, vc0.shape)]

    one, two = attend(("both",)), attend(("cache", "attend"))
    if form:  # the projection's rows split over 3 workgroups a head (a GPU's decode step): the same bits
        three = attend(("both",), splits=3)
        assert all(a.tobytes() == b.tobytes() for a, b in zip(one, three, strict=True))
    for name, a, b in zip(("output", "keys", "values"), one, two, strict=True):
        assert a.tobytes() == b.tobytes(), (
            f"{name}: {np.count_nonzero(a != b)} differ, by up to {np.abs(a - b).max()}"
        )
    out, keys, values = one[0].reshape(out_shape), one[1], one[2]
    at = base + pos
    tol = {"rtol": 1e-3, "atol": 4e-3}
    np.testing.assert_allclose(keys[at], rope_ref(rms(k, kn), pos, n_rot, theta, neox), **tol)
    assert np.array_equal(values[at], f16(v))
    others = np.setdiff1d(np.arange(rows), at)
    assert np.array_equal(keys[others], kc0[others]) and np.array_equal(values[others], vc0[others])
    queries = rope_ref(rms(q, qn), pos, n_rot, theta, neox)
    for i in range(t):
        for h in range(hq):
            kv = slice(base[i], at[i] + 1)
            scores = keys[kv, h // 2] @ queries[i, h] / math.sqrt(d)
            weights = np.exp(scores - scores.max())
            head = weights / weights.sum() @ values[kv, h // 2]
            want = head if wq is None else wq[:, h * d : (h + 1) * d] @ head
            np.testing.assert_allclose(out[i, h], want, **tol)
    with pytest.raises(ValueError, match="only new keys"):
        ops.causal_attention(gpu.record(), *[up(gpu, qkv)] * 6, t, hq, hkv, d, mode="cache")  # type: ignore[arg-type]


def test_a_post_norm_adds_to_the_residual(gpu: GpuDevice) -> None:
    t, d = 3, 64
    x, w, y0 = randn(t, d), randn(d), randn(t, d)
    y = up(gpu, y0)
    got = run(gpu, lambda r: ops.rownorm(r, up(gpu, x), y, t, d, "rms", up(gpu, w), 1e-6, True), y, (t, d))
    np.testing.assert_allclose(got, y0 + rms(x, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("half", [False, True])
def test_linear_with_rope_rotates_and_writes_the_cache(gpu: GpuDevice, half: bool, lanes: int) -> None:
    """Llama's fused q/k/v product: queries rotated, keys rotated and values as they are written into
    the caches at each row's base + pos (partners swapped across neighbouring weight rows)."""
    if half and not gpu.f16:
        pytest.skip("no shader-f16")
    t, hq, hkv, d, n_rot, k = 3, 4, 2, 32, 24, 64  # n_rot < d: the last dims keep their place
    n = (hq + 2 * hkv) * d
    x, w, nw = randn(t, k), randn(n, k), randn(k)
    wq = w.astype(np.float16).astype(np.float32) if half else w
    wb = halves(gpu, w) if half else up(gpu, w)
    pos, base, rows = np.array([0, 5, 300], np.uint32), np.array([0, 8, 320], np.uint32), 640
    qb, kc, vc = gpu.buffer(t * hq * d * 4), gpu.buffer(rows * hkv * d * 2), gpu.buffer(rows * hkv * d * 2)
    rec = gpu.record()
    width = hkv * d
    rope = (up(gpu, pos), up(gpu, base), d, n_rot, 10000.0)
    ops.linear(
        rec,
        up(gpu, x),
        wb,
        qb,
        t,
        n,
        k,
        half=half,
        norm=up(gpu, nw),
        split=((kc, width), (vc, width)),
        rope=rope,
    )  # type: ignore[arg-type]
    gpu.submit(rec)

    def read(buf: object, shape: tuple[int, ...]) -> np.ndarray:
        return np.frombuffer(asyncio.run(gpu.read(buf)), np.float32).reshape(shape)  # type: ignore[arg-type]

    product = rms(x, nw) @ wq.T
    q, kk, v = np.split(product, [hq * d, (hq + hkv) * d], axis=1)
    tol = {"rtol": 1e-3, "atol": 2e-3}
    want_q = rope_ref(q.reshape(t, hq, d), pos, n_rot, 10000.0, False)
    np.testing.assert_allclose(read(qb, (t, hq, d)), want_q, **tol)
    keys, values = read_f16(gpu, kc, (rows, hkv, d)), read_f16(gpu, vc, (rows, hkv, d))  # the f16 caches
    np.testing.assert_allclose(
        keys[base + pos], rope_ref(kk.reshape(t, hkv, d), pos, n_rot, 10000.0, False), **tol
    )
    np.testing.assert_allclose(values[base + pos], v.reshape(t, hkv, d), **tol)
    others = np.setdiff1d(np.arange(rows), base + pos)
    assert not keys[others].any() and not values[others].any()


def test_the_matmul_tiling_is_measured_and_kept_per_device() -> None:
    """tune.py times every tiling on the device (here a fresh device that claims to be hardware, so
    it measures) and keeps the fastest over all the shapes and each shape's own; the device's
    products then use the shape's own, or the overall one for a shape it did not measure. Software
    adapters keep the default without measuring."""
    from ferrousforge.gpu.native import NativeDevice

    device = NativeDevice()
    device.software = True  # (lavapipe is; on a GPU machine the adapter is not)
    assert asyncio.run(tune.tune_matmul(device, [(40, 24, 16)])) is ops.MATMUL_TILES[0]
    assert "matmul_seconds" not in device.tuned
    device.software = False
    best = asyncio.run(tune.tune_matmul(device, [(70, 24, 16), (70, 16, 24)]))
    times = device.tuned["matmul_seconds"]
    assert device.tuned["matmul"] is best and len(times) == len(ops.MATMUL_TILES)
    assert all(s > 0 for s in times.values()) and min(times.values()) == times[tune.tile_name(best)]
    own = device.tuned["matmul_shapes"]
    assert set(own) == {(24, 16), (16, 24)} and set(own.values()) <= set(ops.MATMUL_TILES)
    rec = device.record()
    for n, k in ((24, 16), (16, 24), (20, 16)):
        ops.matmul(rec, *(device.buffer(4 * 70 * 24) for _ in range(4)), 70, n, k, w_kn=True)
    chosen = zip(rec.dispatches, (24, 16, 20), (own[(24, 16)], own[(16, 24)], best), strict=True)
    for dispatch, n, tile in chosen:
        assert dispatch.kernel.workgroup == (tile.bm * tile.bn // (tile.tm * tile.tn), 1, 1)
        assert dispatch.groups == (math.ceil(n / tile.bn), math.ceil(70 / tile.bm), 1)


def test_the_gpu_clock_times_a_pass_and_each_dispatch(gpu: GpuDevice) -> None:
    """NativeDevice.gpu_clock reads the adapter's timestamps (the benchmarks' GPU time, with no host
    in it): one figure for the pass, or one a dispatch, in order. A 96×96×96 product is thousands of
    times a 64-value norm's work, so its dispatch must take longer."""
    from ferrousforge.gpu.native import TIMESTAMPS, NativeDevice

    assert isinstance(gpu, NativeDevice)
    if not set(TIMESTAMPS) <= gpu.features:
        pytest.skip(f"{gpu.name} has no timestamps inside passes")
    n = 96
    a, w, out = up(gpu, randn(n, n)), up(gpu, randn(n, n)), gpu.buffer(4 * n * n)
    norm_out = gpu.buffer(256)
    rec = gpu.record()
    ops.rownorm(rec, a, norm_out, 1, 64, "rms", up(gpu, np.ones(64, np.float32)), 1e-6)
    ops.matmul(rec, a, w, up(gpu, np.zeros(n, np.float32)), out, n, n, n)
    ops.rownorm(rec, a, norm_out, 1, 64, "rms", up(gpu, np.ones(64, np.float32)), 1e-6)
    whole = asyncio.run(gpu.gpu_clock(rec.dispatches))
    each = asyncio.run(gpu.gpu_clock(rec.dispatches, each=True))
    assert len(whole) == 1 and whole[0] > 0
    assert len(each) == 3 and all(s >= 0 for s in each)
    assert each[1] > max(each[0], each[2])
    blind = NativeDevice()
    blind.features = frozenset(blind.features - {"timestamp-query-inside-passes"})
    with pytest.raises(RuntimeError, match="timestamp-query-inside-passes"):
        asyncio.run(blind.gpu_clock(rec.dispatches, each=True))


def test_the_encoder_takes_lists_or_packed_bytes_with_the_same_bits(gpu: GpuDevice) -> None:
    """``BertEncoder.run`` (token lists, padded in Python: the page) and ``run_packed`` (a padded batch as
    the buffers hold it: the host packs it with numpy) give the same bits; a batch of the wrong size is
    refused before anything runs."""
    weights = {name: (randn(*shape).tobytes(), shape) for name, (_, shape) in _bert(64, 2).items()}
    encoder = BertEncoder(gpu, weights, BertShape(64, 4, 2, 128, 1e-12), "mean", normalize=True)
    rows = [[5, 9, 13, 2], [7, 1], [3, 3, 3]]
    ids = np.array([r + [0] * (4 - len(r)) for r in rows], "<u4")
    mask = (np.arange(4) < np.array([[len(r)] for r in rows])).astype("<f4")
    types = np.zeros_like(ids)
    listed = asyncio.run(encoder.run(rows))
    packed = asyncio.run(encoder.run_packed(3, 4, ids.tobytes(), types.tobytes(), mask.tobytes()))
    assert listed == packed and listed[1] == 64
    vectors = np.frombuffer(listed[0], np.float32).reshape(3, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])
    with pytest.raises(ValueError, match="takes 48 bytes"):
        asyncio.run(encoder.run_packed(3, 4, ids.tobytes()[:-4], types.tobytes(), mask.tobytes()))
