"""A BERT-family encoder on the GPU compute layer: the same weights the host stores as ONNX.

Weights are named as ``host/ferrousforge_host/models/bert_onnx.py`` writes them (``word_emb``,
``pos_emb``, ``type_emb``, ``encoder.layer.N.attention.self.query.weight`` stored [in, out], ...) and
given as little-endian f32 bytes, so the host (from the ONNX file) and the page (from the cached
blob) hand over the same thing. A forward pass for one batch shape (sequences × padded length) is
recorded once and replayed: inputs are written into its buffers, one submit runs every layer, and
one read brings back the pooled vectors (or the classifier's logits).
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ferrousforge.gpu import ops, tune
from ferrousforge.gpu.device import Buffer, GpuDevice, Recording
from ferrousforge.gpu.onnx_weights import FLOAT, OnnxWeights

TUNE_ROWS = 2048  # tokens a batch of the products the matmul tiling is measured on


@dataclass(frozen=True)
class BertShape:
    hidden: int
    heads: int
    layers: int
    intermediate: int
    eps: float
    labels: int = 0  # a cross-encoder's classifier outputs; 0: an embedding model

    @classmethod
    def from_weights(cls, shapes: dict[str, tuple[int, ...]], heads: int, eps: float) -> BertShape:
        layers = 0
        while f"encoder.layer.{layers}.attention.self.query.weight" in shapes:
            layers += 1
        hidden = shapes["word_emb"][1]
        intermediate = shapes["encoder.layer.0.intermediate.dense.weight"][1]
        labels = shapes["classifier.weight"][1] if "classifier.weight" in shapes else 0
        return cls(hidden, heads, layers, intermediate, eps, labels)


Weights = dict[str, tuple[Any, tuple[int, ...]]]  # name → (f32 little-endian bytes, shape)


def bert_weights(onnx: OnnxWeights, data: memoryview) -> tuple[Weights, int, float]:
    """The f32 weights of a BERT ONNX file FerrousForge wrote (slices of ``data``, no copies), its
    head count and LayerNorm epsilon."""
    if "word_emb" not in onnx.tensors or "encoder.layer.0.attention.self.query.weight" not in onnx.tensors:
        raise ValueError(
            "the wgpu engine runs BERT models FerrousForge converted from safetensors; "
            "this ONNX file was made elsewhere (onnxruntime runs it: engine 'onnx')"
        )
    heads = onnx.int64s(data, "split_shape")[2]
    eps = next(float(n.attributes["epsilon"]) for n in onnx.nodes if n.op_type == "LayerNormalization")
    weights = {
        t.name: (data[t.offset : t.offset + t.length], t.dims)
        for t in onnx.tensors.values()
        if t.data_type == FLOAT and t.dims
    }
    return weights, heads, eps


def _fuse_qkv(weights: Weights, layers: int) -> Weights:
    """Each layer's query, key and value products as one ([in, 3·out] weights, row by row q | k | v;
    biases end to end): one dispatch instead of three, and three times the columns to spread over a
    GPU."""
    fused = dict(weights)
    for i in range(layers):
        p = f"encoder.layer.{i}.attention.self."
        parts = [fused.pop(p + part + ".weight") for part in ("query", "key", "value")]
        (rows, cols), width = parts[0][1], parts[0][1][1] * 4
        data = bytearray()
        for r in range(rows):
            for part, _ in parts:
                data += part[r * width : (r + 1) * width]
        fused[p + "qkv.weight"] = (bytes(data), (rows, 3 * cols))
        biases = [fused.pop(p + part + ".bias") for part in ("query", "key", "value")]
        fused[p + "qkv.bias"] = (b"".join(bytes(data) for data, _ in biases), (3 * cols,))
    return fused


@dataclass
class _Pass:
    """The buffers and recording of one batch shape."""

    recording: Recording
    ids: Buffer
    positions: Buffer
    types: Buffer
    mask: Buffer
    out: Buffer
    out_size: int


class BertEncoder:
    def __init__(
        self,
        device: GpuDevice,
        weights: Weights,
        shape: BertShape,
        pooling: str,
        normalize: bool = False,
        half: bool = False,
    ) -> None:
        self.device = device
        self.shape = shape
        self.pooling = pooling
        self.normalize = normalize  # L2-normalise the pooled vectors on the GPU
        self.max_positions = weights["pos_emb"][1][0]
        weights = _fuse_qkv(weights, shape.layers)
        self.w = {name: device.upload(data) for name, (data, _) in weights.items()}
        # matrix weights in f16 where asked and the adapter can (half the memory; sums stay f32)
        matrices = {n for n, (data, dims) in weights.items() if len(dims) == 2 and len(data) % 8 == 0}
        self.half = {n for n in matrices if n.endswith(".weight")} if half else set()
        self.half -= {"word_emb", "pos_emb", "type_emb"}
        if self.half and device.f16:
            rec = device.record()
            for name in sorted(self.half):
                size = len(weights[name][0]) // 4
                f16 = device.buffer(size * 2)
                ops.to_half(rec, self.w[name], f16, size)
                self.w[name] = f16
            device.submit(rec)
        else:
            self.half = set()
        self._passes: OrderedDict[tuple[int, int], _Pass] = OrderedDict()

    def _record(self, b: int, s: int) -> _Pass:
        dev, sh = self.device, self.shape
        t, d = b * s, sh.hidden
        w = self.w
        rec = dev.record()
        ids, positions, types = dev.buffer(t * 4), dev.buffer(t * 4), dev.buffer(t * 4)
        mask = dev.buffer(t * 4)
        dev.write(positions, array("I", range(s)).tobytes() * b)  # the same for every batch of this shape
        x, y = dev.buffer(t * d * 4), dev.buffer(t * d * 4)  # the residual stream, ping-pong
        qkv = dev.buffer(t * 3 * d * 4)  # each token's queries, keys and values side by side
        q, ctx = dev.buffer(t * d * 4), dev.buffer(t * d * 4)
        h = dev.buffer(t * sh.intermediate * 4)
        ops.embed(rec, ids, positions, types, w["word_emb"], w["pos_emb"], w["type_emb"], q, t, d)
        ops.layernorm(
            rec, q, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], x, t, d, sh.eps
        )

        def linear(src: Buffer, dst: Buffer, name: str, n: int, k: int, act: str = "") -> None:
            weight = name + ".weight"
            ops.matmul(rec, src, w[weight], w[name + ".bias"], dst, t, n, k, act, True, weight in self.half)

        for i in range(sh.layers):
            p = f"encoder.layer.{i}."

            linear(x, qkv, p + "attention.self.qkv", 3 * d, d)
            ops.attention(rec, qkv, mask, ctx, b, s, sh.heads, d // sh.heads)
            linear(ctx, q, p + "attention.output.dense", d, d)
            norm = p + "attention.output.LayerNorm"
            ops.layernorm(rec, q, w[norm + ".weight"], w[norm + ".bias"], y, t, d, sh.eps, residual=x)
            linear(y, h, p + "intermediate.dense", sh.intermediate, d, "gelu")
            linear(h, q, p + "output.dense", d, sh.intermediate)
            norm = p + "output.LayerNorm"
            ops.layernorm(rec, q, w[norm + ".weight"], w[norm + ".bias"], x, t, d, sh.eps, residual=y)
        if sh.labels:  # BertForSequenceClassification: [CLS] → pooler (tanh) → classifier
            cls, pooled = dev.buffer(b * d * 4), dev.buffer(b * d * 4)
            out = dev.buffer(b * sh.labels * 4)
            ops.pool(rec, x, mask, cls, b, s, d, "cls")
            ops.matmul(
                rec,
                cls,
                w["pooler.dense.weight"],
                w["pooler.dense.bias"],
                pooled,
                b,
                d,
                d,
                "tanh",
                True,
                "pooler.dense.weight" in self.half,
            )
            ops.matmul(
                rec,
                pooled,
                w["classifier.weight"],
                w["classifier.bias"],
                out,
                b,
                sh.labels,
                d,
                "",
                True,
                "classifier.weight" in self.half,
            )
            return _Pass(rec, ids, positions, types, mask, out, b * sh.labels * 4)
        out = dev.buffer(b * d * 4)
        ops.pool(rec, x, mask, out, b, s, d, self.pooling)
        if self.normalize:
            pooled, out = out, dev.buffer(b * d * 4)
            ops.rownorm(rec, pooled, out, b, d, "l2")
        return _Pass(rec, ids, positions, types, mask, out, b * d * 4)

    def _pass(self, b: int, s: int) -> _Pass:
        key = (b, s)
        found = self._passes.get(key)
        if found is None:
            found = self._passes[key] = self._record(b, s)
            while len(self._passes) > 16:  # keep the recent shapes: dynamic batching repeats them
                self._passes.popitem(last=False)
        self._passes.move_to_end(key)
        return found

    async def run(self, ids: list[list[int]], types: list[list[int]] | None = None) -> tuple[bytes, int]:
        """Token ids of a batch (unpadded) → the pooled vectors [batch, hidden] (cross-encoders: the
        logits [batch, labels]) as f32 bytes, and the row width."""
        b, s = len(ids), max(len(r) for r in ids)
        flat_ids, flat_types, mask = array("I"), array("I"), array("f")
        for i, row in enumerate(ids):
            pad = [0] * (s - len(row))
            flat_ids.extend(row)
            flat_ids.extend(pad)
            flat_types.extend(types[i] if types else [0] * len(row))
            flat_types.extend(pad)
            mask.extend([1.0] * len(row))
            mask.extend([0.0] * len(pad))
        return await self.run_packed(b, s, flat_ids.tobytes(), flat_types.tobytes(), mask.tobytes())

    async def run_packed(self, b: int, s: int, ids: bytes, types: bytes, mask: bytes) -> tuple[bytes, int]:
        """``run`` on a batch already padded to ``s`` tokens: ids and token types as little-endian u32,
        the mask (1.0 a token, 0.0 padding) as f32, [b, s] each (the host packs them with numpy)."""
        if s > min(self.max_positions, ops.MAX_SEQUENCE):
            raise ValueError(f"input of {s} tokens is longer than the encoder's {self.max_positions}")
        if not len(ids) == len(types) == len(mask) == 4 * b * s:
            raise ValueError(f"a batch of {b} × {s} tokens takes {4 * b * s} bytes of each input")
        if b * s > ops.SKINNY_ROWS and "matmul" not in self.device.tuned:
            d, inter = self.shape.hidden, self.shape.intermediate
            shapes = [(TUNE_ROWS, 3 * d, d), (TUNE_ROWS, d, d), (TUNE_ROWS, inter, d), (TUNE_ROWS, d, inter)]
            await tune.tune_matmul(self.device, shapes, bool(self.half))
        run = self._pass(b, s)
        self.device.write(run.ids, ids)
        self.device.write(run.types, types)
        self.device.write(run.mask, mask)
        self.device.submit(run.recording)
        width = self.shape.labels or self.shape.hidden
        return await self.device.read(run.out, run.out_size), width
