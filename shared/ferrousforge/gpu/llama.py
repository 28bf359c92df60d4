"""A Llama-architecture decoder on the GPU compute layer, reading a GGUF file directly.

Weights are uploaded as stored and dequantized on the GPU (F16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K; matrices
kept in f16 where the adapter has shader-f16); the KV cache lives on the GPU. A pass over T new tokens
(T > 1: a prompt, T = 1: a decode step) is recorded once per T and replayed: token ids and positions
in, logits (or with ``greedy`` only each row's argmax) out. One sequence; the engine around it (sampling,
slots, streaming) is the next step.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

from ferrousforge.gguf import TensorInfo
from ferrousforge.gpu import ops
from ferrousforge.gpu.device import Buffer, GpuDevice, Recording


@dataclass(frozen=True)
class DecoderShape:
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

    @classmethod
    def from_gguf(cls, meta: dict[str, Any], tensors: dict[str, TensorInfo]) -> DecoderShape:
        arch = meta.get("general.architecture")
        if arch != "llama":
            raise ValueError(f"the GPU decoder runs llama models, not {arch}")
        n_embd, n_head = int(meta["llama.embedding_length"]), int(meta["llama.attention.head_count"])
        head_dim = n_embd // n_head
        return cls(
            n_embd=n_embd,
            n_layer=int(meta["llama.block_count"]),
            n_head=n_head,
            n_head_kv=int(meta.get("llama.attention.head_count_kv", n_head)),
            head_dim=head_dim,
            n_ff=int(meta["llama.feed_forward_length"]),
            n_vocab=tensors["token_embd.weight"].shape[1],
            eps=float(meta.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
            rope_base=float(meta.get("llama.rope.freq_base", 10000.0)),
            n_rot=int(meta.get("llama.rope.dimension_count", head_dim)),
        )


@dataclass
class _Pass:
    recording: Recording
    ids: Buffer
    pos: Buffer
    logits: Buffer
    best: Buffer


class LlamaDecoder:
    MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")

    def __init__(
        self, device: GpuDevice, data: Any, meta: dict[str, Any], tensors: dict[str, TensorInfo], n_ctx: int
    ) -> None:
        self.device = device
        self.shape = sh = DecoderShape.from_gguf(meta, tensors)
        self.n_ctx = n_ctx
        self.half: set[str] = set()
        rec = device.record()
        self.w: dict[str, Buffer] = {}
        for name, info in tensors.items():
            self.w[name] = self._weight(rec, data, info)
        device.submit(rec)
        if "output.weight" not in self.w:  # tied embeddings (an f32 table: the gather reads it)
            self.w["output.weight"] = self.w["token_embd.weight"]
        kv = sh.n_head_kv * sh.head_dim
        self.kcache = [device.buffer(n_ctx * kv * 4) for _ in range(sh.n_layer)]
        self.vcache = [device.buffer(n_ctx * kv * 4) for _ in range(sh.n_layer)]
        self._zeros: dict[int, Buffer] = {}
        self._passes: dict[int, _Pass] = {}

    def _weight(self, rec: Recording, data: Any, info: TensorInfo) -> Buffer:
        raw = data[info.offset : info.offset + info.nbytes]
        count = math.prod(info.shape)
        if info.kind == "F32":
            values = self.device.upload(raw)
        else:
            values = self.device.buffer(count * 4)
            ops.dequantize(rec, self.device.upload(raw), values, count, info.kind)
        matrix = len(info.shape) == 2 and info.name != "token_embd.weight" and count % 2 == 0
        if matrix and self.device.f16:
            half = self.device.buffer(count * 2)
            ops.to_half(rec, values, half, count)
            self.half.add(info.name)
            return half
        return values

    def _zero(self, n: int) -> Buffer:
        if n not in self._zeros:
            self._zeros[n] = self.device.buffer(n * 4)
        return self._zeros[n]

    def _linear(self, rec: Recording, x: Buffer, name: str, out: Buffer, t: int, n: int, k: int) -> None:
        ops.matmul(rec, x, self.w[name], self._zero(n), out, t, n, k, half=name in self.half)

    def _record(self, t: int) -> _Pass:
        dev, sh, w = self.device, self.shape, self.w
        d, hq, hkv, dh = sh.n_embd, sh.n_head, sh.n_head_kv, sh.head_dim
        rec = dev.record()
        ids, pos = dev.buffer(t * 4), dev.buffer(t * 4)
        x, h, o = dev.buffer(t * d * 4), dev.buffer(t * d * 4), dev.buffer(t * d * 4)
        q, attn = dev.buffer(t * hq * dh * 4), dev.buffer(t * hq * dh * 4)
        k, v = dev.buffer(t * hkv * dh * 4), dev.buffer(t * hkv * dh * 4)
        g, u, a = (dev.buffer(t * sh.n_ff * 4) for _ in range(3))
        logits, best = dev.buffer(t * sh.n_vocab * 4), dev.buffer(t * 4)
        ops.gather(rec, ids, w["token_embd.weight"], x, t, d)
        for i in range(sh.n_layer):
            p = f"blk.{i}."
            ops.rownorm(rec, x, h, t, d, "rms", w[p + "attn_norm.weight"], sh.eps)
            self._linear(rec, h, p + "attn_q.weight", q, t, hq * dh, d)
            self._linear(rec, h, p + "attn_k.weight", k, t, hkv * dh, d)
            self._linear(rec, h, p + "attn_v.weight", v, t, hkv * dh, d)
            ops.rope(rec, q, pos, t, hq, dh, sh.n_rot, sh.rope_base, neox=False)
            ops.rope(rec, k, pos, t, hkv, dh, sh.n_rot, sh.rope_base, neox=False)
            ops.scatter(rec, k, pos, self.kcache[i], t, hkv * dh)
            ops.scatter(rec, v, pos, self.vcache[i], t, hkv * dh)
            ops.causal_attention(rec, q, self.kcache[i], self.vcache[i], pos, attn, t, hq, hkv, dh)
            self._linear(rec, attn, p + "attn_output.weight", o, t, d, hq * dh)
            ops.add(rec, o, x, t * d)
            ops.rownorm(rec, x, h, t, d, "rms", w[p + "ffn_norm.weight"], sh.eps)
            self._linear(rec, h, p + "ffn_gate.weight", g, t, sh.n_ff, d)
            self._linear(rec, h, p + "ffn_up.weight", u, t, sh.n_ff, d)
            ops.glu(rec, g, u, a, t * sh.n_ff)
            self._linear(rec, a, p + "ffn_down.weight", o, t, d, sh.n_ff)
            ops.add(rec, o, x, t * d)
        ops.rownorm(rec, x, h, t, d, "rms", w["output_norm.weight"], sh.eps)
        self._linear(rec, h, "output.weight", logits, t, sh.n_vocab, d)
        ops.argmax(rec, logits, best, t, sh.n_vocab)
        return _Pass(rec, ids, pos, logits, best)

    def _run(self, tokens: list[int], start: int) -> _Pass:
        t = len(tokens)
        if not t or start + t > self.n_ctx:
            raise ValueError(f"{t} tokens at position {start} do not fit the context of {self.n_ctx}")
        if any(not 0 <= tok < self.shape.n_vocab for tok in tokens):
            raise ValueError(f"a token id is outside the vocabulary of {self.shape.n_vocab}")
        run = self._passes.get(t) or self._passes.setdefault(t, self._record(t))
        self.device.write(run.ids, struct.pack(f"<{t}I", *tokens))
        self.device.write(run.pos, struct.pack(f"<{t}I", *range(start, start + t)))
        self.device.submit(run.recording)
        return run

    async def logits(self, tokens: list[int], start: int) -> list[list[float]]:
        """Run ``tokens`` at positions start.. (their keys and values join the cache): every row's logits."""
        run = self._run(tokens, start)
        data = await self.device.read(run.logits, len(tokens) * self.shape.n_vocab * 4)
        values = struct.unpack(f"<{len(data) // 4}f", data)
        n = self.shape.n_vocab
        return [list(values[i * n : (i + 1) * n]) for i in range(len(tokens))]

    async def greedy(self, tokens: list[int], start: int) -> list[int]:
        """The same pass, reading back only each row's most likely next token."""
        run = self._run(tokens, start)
        data = await self.device.read(run.best, len(tokens) * 4)
        return list(struct.unpack(f"<{len(tokens)}I", data))
