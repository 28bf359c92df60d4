"""Whisper as three ONNX graphs, written from a CTranslate2 ``model.bin`` (no torch, no hub).

``model.bin`` is CTranslate2's binary spec: a version, the spec's name and revision, then named
variables (shape, dtype id, raw bytes) and aliases (the decoder's output projection is the embedding
table). The graphs, which onnxruntime runs natively and onnxruntime-web runs in a page:

- ``whisper-mel.onnx``: 16 kHz samples ``audio`` [N] → log-mel ``mel`` [1, N // 160, n_mels], frames
  first so that a 30 s window is one contiguous slice. The STFT is a conv1d with the windowed DFT as
  its kernel; padding, normalisation and the frames kept follow faster-whisper's feature extractor.
- ``whisper-encoder.onnx``: ``mel`` [1, T ≤ 3000, n_mels] (zero-padded to 30 s inside) → each decoder
  layer's cross-attention keys ``cross_k`` [L, 1, H, D, 1500] and values ``cross_v`` [L, 1, H, 1500, D].
- ``whisper-decoder.onnx``: ``tokens`` [1, n], the self-attention cache ``self_k``/``self_v``
  [L, 1, H, past, D] (past may be 0), ``cross_k``/``cross_v`` and ``suppress`` [vocab] (0 or -inf,
  added to the last position's logits) → the greedy ``next_token`` [1] and the grown cache.

Weights stay float16 as CTranslate2 stores them (int8 specs are dequantized) and are cast to float32
in the graph, which onnxruntime folds once when the session is created.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ferrousforge_host.models.bert_onnx import OPSET, UnsupportedModel

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
WINDOW_FRAMES = 3000  # 30 s of mel frames, what the encoder sees
FILE_NAMES = ("whisper-mel.onnx", "whisper-encoder.onnx", "whisper-decoder.onnx")

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: Path | str) -> dict[str, np.ndarray]:
    """The variables of a CTranslate2 model.bin (aliases resolved), as numpy arrays."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        (value,) = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        size = take("H")
        text = data[pos : pos + size - 1].decode()
        pos += size
        return text

    version = take("I")
    if version < 5:
        raise UnsupportedModel(f"CTranslate2 model.bin version {version} is too old")
    name, _revision = string(), take("I")
    if name != "WhisperSpec":
        raise UnsupportedModel(f"model.bin holds a {name}, not Whisper")
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        key = string()
        shape = [take("I") for _ in range(take("B"))]
        dtype = np.dtype(_DTYPES[take("B")])
        size = take("I")
        variables[key] = np.frombuffer(data, dtype, size // dtype.itemsize, pos).reshape(shape)
        pos += size
    for _ in range(take("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    return variables


def _float(weights: dict[str, np.ndarray], key: str) -> np.ndarray:
    """A weight as float16, dequantizing int8 ones (per output row scales in ``<key>_scale``)."""
    w = weights[key]
    if w.dtype == np.int8:
        scale = weights[key + "_scale"].astype(np.float32)
        return (w.astype(np.float32) / scale.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float16)
    return w.astype(np.float16)


class _Graph:
    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.w = weights
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def const(self, value: np.ndarray | float | list[int], name: str | None = None) -> str:
        array = np.asarray(value)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        self.n += 1
        name = name or f"c_{self.n}"
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, dtype=np.int64))

    def op(self, kind: str, inputs: list[str], outputs: int = 1, **attrs: Any) -> Any:
        self.n += 1
        names = [f"{kind.lower()}_{self.n}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(kind, inputs, names, name=f"{kind}_{self.n}", **attrs))
        return names[0] if outputs == 1 else names

    def weight(self, key: str, transpose: bool = False) -> str:
        """A float16 initializer cast to float32 (folded by onnxruntime when the session starts)."""
        w = _float(self.w, key)
        stored = self.const(np.ascontiguousarray(w.T if transpose else w), key.replace("/", "."))
        return self.op("Cast", [stored], to=TensorProto.FLOAT)

    def linear(self, x: str, prefix: str) -> str:
        y = self.op("MatMul", [x, self.weight(prefix + "/weight", transpose=True)])
        return self.op("Add", [y, self.weight(prefix + "/bias")]) if prefix + "/bias" in self.w else y

    def layer_norm(self, x: str, prefix: str) -> str:
        gamma, beta = self.weight(prefix + "/gamma"), self.weight(prefix + "/beta")
        return self.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=1e-5)

    def gelu(self, x: str) -> str:  # exact (erf) GELU, as Whisper and CTranslate2 compute it
        inner = self.op("Erf", [self.op("Div", [x, self.const(math.sqrt(2.0))])])
        return self.op(
            "Mul", [self.op("Mul", [x, self.const(0.5)]), self.op("Add", [inner, self.const(1.0)])]
        )

    def heads(self, x: str, heads: int, perm: list[int]) -> str:
        """[1, S, H·D] → [1, H, S, D] (perm 0 2 1 3) or [1, H, D, S] (perm 0 2 3 1)."""
        return self.op("Transpose", [self.op("Reshape", [x, self.ints(0, 0, heads, -1)])], perm=perm)

    def attend(self, q: str, k_t: str, v: str, mask: str | None = None) -> str:
        """softmax(q·kᵀ/√D + mask)·v over [1, H, S, D] queries, back to [1, S, H·D]."""
        head_dim = self.op("Cast", [self.op("Shape", [q], start=3)], to=TensorProto.FLOAT)
        scores = self.op("Div", [self.op("MatMul", [q, k_t]), self.op("Sqrt", [head_dim])])
        if mask is not None:
            scores = self.op("Add", [scores, mask])
        context = self.op("MatMul", [self.op("Softmax", [scores], axis=-1), v])
        return self.op("Reshape", [self.op("Transpose", [context], perm=[0, 2, 1, 3]), self.ints(0, 0, -1)])

    def model(self, name: str, inputs: list[Any], outputs: list[Any]) -> bytes:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ferrousforge"
        )
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model.SerializeToString()


def _float_info(name: str, shape: list[Any]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def mel_filters(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular mel filters [n_mels, n_fft // 2 + 1] (librosa's
    default, which Whisper uses)."""

    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        linear = hz / (200.0 / 3)
        log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(hz >= 1000.0, log, linear)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), mel * 200.0 / 3)

    fft_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(0.0, hz_to_mel(np.array(sample_rate / 2.0)), n_mels + 2))
    rising = (fft_hz[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    falling = (edges[2:, None] - fft_hz[None, :]) / np.diff(edges)[1:, None]
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return (triangles * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def mel_graph(n_mels: int) -> bytes:
    g = _Graph({})
    # faster-whisper: 160 zeros after the audio, then the STFT's centre (reflect) padding
    x = g.op("Pad", ["audio", g.ints(0, HOP)], mode="constant")
    x = g.op("Unsqueeze", [x, g.ints(0, 1)])
    x = g.op("Pad", [x, g.ints(0, 0, N_FFT // 2, 0, 0, N_FFT // 2)], mode="reflect")
    bins = N_FFT // 2 + 1
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    angle = 2 * np.pi * np.outer(np.arange(bins), np.arange(N_FFT)) / N_FFT
    kernel = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])[:, None, :]
    spectrum = g.op("Conv", [x, g.const(kernel.astype(np.float32))], strides=[HOP])  # [1, 2·bins, F]
    power = g.op("Mul", [spectrum, spectrum])
    real, imag = g.op("Split", [power, g.ints(bins, bins)], outputs=2, axis=1)
    power = g.op(
        "Slice", [g.op("Add", [real, imag]), g.ints(0), g.ints(-1), g.ints(2)]
    )  # drop the last frame
    mel = g.op("MatMul", [g.const(mel_filters(n_mels)), power])  # [1, n_mels, F - 1]
    log = g.op("Div", [g.op("Log", [g.op("Max", [mel, g.const(1e-10)])]), g.const(math.log(10.0))])
    floor = g.op("Sub", [g.op("ReduceMax", [log], keepdims=0), g.const(8.0)])
    log = g.op("Div", [g.op("Add", [g.op("Max", [log, floor]), g.const(4.0)]), g.const(4.0)])
    log = g.op("Slice", [log, g.ints(0), g.ints(-1), g.ints(2)])  # content frames: N // 160
    g.nodes.append(helper.make_node("Transpose", [log], ["mel"], perm=[0, 2, 1]))
    return g.model(
        "whisper_mel", [_float_info("audio", ["samples"])], [_float_info("mel", [1, "frames", n_mels])]
    )


def encoder_graph(w: dict[str, np.ndarray]) -> bytes:
    g = _Graph(w)
    n_mels = int(w["encoder/conv1/weight"].shape[1])
    heads = int(w["encoder/num_heads"])
    frames = g.op("Gather", [g.op("Shape", ["mel"]), g.ints(1)], axis=0)
    pad = g.op(
        "Concat", [g.ints(0, 0, 0, 0), g.op("Sub", [g.ints(WINDOW_FRAMES), frames]), g.ints(0)], axis=0
    )
    x = g.op("Transpose", [g.op("Pad", ["mel", pad], mode="constant")], perm=[0, 2, 1])  # [1, n_mels, 3000]
    x = g.gelu(
        g.op("Conv", [x, g.weight("encoder/conv1/weight"), g.weight("encoder/conv1/bias")], pads=[1, 1])
    )
    x = g.op(
        "Conv",
        [x, g.weight("encoder/conv2/weight"), g.weight("encoder/conv2/bias")],
        pads=[1, 1],
        strides=[2],
    )
    x = g.op("Transpose", [g.gelu(x)], perm=[0, 2, 1])  # [1, 1500, width]
    x = g.op("Add", [x, g.weight("encoder/position_encodings/encodings")])
    width = int(w["encoder/conv1/bias"].shape[0])
    layer = 0
    while f"encoder/layer_{layer}/ffn/linear_0/weight" in w:
        p = f"encoder/layer_{layer}/"
        qkv = g.linear(g.layer_norm(x, p + "self_attention/layer_norm"), p + "self_attention/linear_0")
        q, k, v = g.op("Split", [qkv, g.ints(width, width, width)], outputs=3, axis=-1)
        context = g.attend(
            g.heads(q, heads, [0, 2, 1, 3]), g.heads(k, heads, [0, 2, 3, 1]), g.heads(v, heads, [0, 2, 1, 3])
        )
        x = g.op("Add", [x, g.linear(context, p + "self_attention/linear_1")])
        h = g.gelu(g.linear(g.layer_norm(x, p + "ffn/layer_norm"), p + "ffn/linear_0"))
        x = g.op("Add", [x, g.linear(h, p + "ffn/linear_1")])
        layer += 1
    x = g.layer_norm(x, "encoder/layer_norm")
    # every decoder layer's cross-attention keys and values, computed once per window
    keys, values = [], []
    for i in range(_decoder_layers(w)):
        kv = g.linear(x, f"decoder/layer_{i}/attention/linear_1")
        k, v = g.op("Split", [kv, g.ints(width, width)], outputs=2, axis=-1)
        keys.append(g.op("Unsqueeze", [g.heads(k, heads, [0, 2, 3, 1]), g.ints(0)]))
        values.append(g.op("Unsqueeze", [g.heads(v, heads, [0, 2, 1, 3]), g.ints(0)]))
    g.nodes.append(helper.make_node("Concat", keys, ["cross_k"], axis=0))
    g.nodes.append(helper.make_node("Concat", values, ["cross_v"], axis=0))
    layers, dim = _decoder_layers(w), width // heads
    return g.model(
        "whisper_encoder",
        [_float_info("mel", [1, "frames", n_mels])],
        [
            _float_info("cross_k", [layers, 1, heads, dim, 1500]),
            _float_info("cross_v", [layers, 1, heads, 1500, dim]),
        ],
    )


def _decoder_layers(w: dict[str, np.ndarray]) -> int:
    return sum(1 for k in w if k.startswith("decoder/layer_") and k.endswith("/ffn/linear_0/weight"))


def decoder_graph(w: dict[str, np.ndarray]) -> bytes:
    g = _Graph(w)
    heads = int(w["decoder/num_heads"])
    vocab, width = w["decoder/embeddings/weight"].shape
    layers, dim = _decoder_layers(w), width // heads
    n = g.op("Gather", [g.op("Shape", ["tokens"]), g.ints(1)], axis=0)
    past = g.op("Gather", [g.op("Shape", ["self_k"]), g.ints(3)], axis=0)
    total = g.op("Add", [past, n])
    one = g.const(np.array(1, dtype=np.int64))
    positions = g.op("Range", [g.op("Squeeze", [past]), g.op("Squeeze", [total]), one])
    embeddings = g.weight("decoder/embeddings/weight")  # [vocab, width], the output projection too
    x = g.op("Gather", [embeddings, "tokens"])
    x = g.op("Add", [x, g.op("Gather", [g.weight("decoder/position_encodings/encodings"), positions])])
    # causal mask [n, past + n]: query at absolute position p sees keys 0..p
    keys_at = g.op("Range", [g.const(np.array(0, dtype=np.int64)), g.op("Squeeze", [total]), one])
    later = g.op("Greater", [keys_at, g.op("Unsqueeze", [positions, g.ints(1)])])
    mask = g.op("Where", [later, g.const(np.array(-1e9, np.float32)), g.const(0.0)])
    new_k, new_v = [], []
    for i in range(layers):
        p = f"decoder/layer_{i}/"
        qkv = g.linear(g.layer_norm(x, p + "self_attention/layer_norm"), p + "self_attention/linear_0")
        q, k, v = g.op("Split", [qkv, g.ints(width, width, width)], outputs=3, axis=-1)
        layer = g.ints(i)
        k_all = g.op(
            "Concat",
            [
                g.op("Squeeze", [g.op("Gather", ["self_k", layer], axis=0), g.ints(0)]),
                g.heads(k, heads, [0, 2, 1, 3]),
            ],
            axis=2,
        )
        v_all = g.op(
            "Concat",
            [
                g.op("Squeeze", [g.op("Gather", ["self_v", layer], axis=0), g.ints(0)]),
                g.heads(v, heads, [0, 2, 1, 3]),
            ],
            axis=2,
        )
        new_k.append(g.op("Unsqueeze", [k_all, g.ints(0)]))
        new_v.append(g.op("Unsqueeze", [v_all, g.ints(0)]))
        k_t = g.op("Transpose", [k_all], perm=[0, 1, 3, 2])
        context = g.attend(g.heads(q, heads, [0, 2, 1, 3]), k_t, v_all, mask)
        x = g.op("Add", [x, g.linear(context, p + "self_attention/linear_1")])
        q = g.heads(
            g.linear(g.layer_norm(x, p + "attention/layer_norm"), p + "attention/linear_0"),
            heads,
            [0, 2, 1, 3],
        )
        cross_k = g.op("Squeeze", [g.op("Gather", ["cross_k", layer], axis=0), g.ints(0)])
        cross_v = g.op("Squeeze", [g.op("Gather", ["cross_v", layer], axis=0), g.ints(0)])
        x = g.op("Add", [x, g.linear(g.attend(q, cross_k, cross_v), p + "attention/linear_2")])
        h = g.gelu(g.linear(g.layer_norm(x, p + "ffn/layer_norm"), p + "ffn/linear_0"))
        x = g.op("Add", [x, g.linear(h, p + "ffn/linear_1")])
    last = g.op("Gather", [x, g.op("Sub", [n, one])], axis=1)  # [1, 1, width]
    last = g.op("Squeeze", [g.layer_norm(last, "decoder/layer_norm"), g.ints(1)])
    logits = g.op("Gemm", [last, embeddings], transB=1)  # [1, vocab]
    logits = g.op("Add", [logits, "suppress"])
    g.nodes.append(helper.make_node("ArgMax", [logits], ["next_token"], axis=-1, keepdims=0))
    g.nodes.append(helper.make_node("Concat", new_k, ["self_k_out"], axis=0))
    g.nodes.append(helper.make_node("Concat", new_v, ["self_v_out"], axis=0))
    cache = [layers, 1, heads, "past", dim]
    grown = [layers, 1, heads, "total", dim]
    return g.model(
        "whisper_decoder",
        [
            helper.make_tensor_value_info("tokens", TensorProto.INT64, [1, "n"]),
            _float_info("self_k", cache),
            _float_info("self_v", cache),
            _float_info("cross_k", [layers, 1, heads, dim, 1500]),
            _float_info("cross_v", [layers, 1, heads, 1500, dim]),
            _float_info("suppress", [int(vocab)]),
        ],
        [
            helper.make_tensor_value_info("next_token", TensorProto.INT64, [1]),
            _float_info("self_k_out", grown),
            _float_info("self_v_out", grown),
        ],
    )


def export(model_bin: Path | str) -> dict[str, bytes]:
    """The three graphs (``FILE_NAMES``) for a CTranslate2 Whisper model.bin."""
    w = read_ct2(model_bin)
    n_mels = int(w["encoder/conv1/weight"].shape[1])
    graphs = (mel_graph(n_mels), encoder_graph(w), decoder_graph(w))
    return dict(zip(FILE_NAMES, graphs, strict=True))
