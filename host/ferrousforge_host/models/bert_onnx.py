"""Build an ONNX graph for a BERT encoder straight from its safetensors weights (no torch needed).

Covers BERT-family encoders as sentence-transformers and cross-encoders ship them: word, position
and token-type embeddings, post-norm attention blocks with GELU, and either the last hidden state
(``head="encoder"``) or BertForSequenceClassification's pooler + classifier (``head="classifier"``).
Inputs are ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64, [batch, seq]), all
dynamic, so padding and batch size never get baked in.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class UnsupportedModel(ValueError):
    pass


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        self.n += 1
        out = f"{kind.lower()}_{self.n}"
        self.nodes.append(helper.make_node(kind, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x: str, weights: dict[str, np.ndarray], prefix: str) -> str:
        w = self.const(
            prefix + ".weight", np.ascontiguousarray(weights[prefix + ".weight"].T.astype(np.float32))
        )
        b = self.const(prefix + ".bias", weights[prefix + ".bias"].astype(np.float32))
        return self.op("Add", [self.op("MatMul", [x, w]), b])

    def layer_norm(self, x: str, weights: dict[str, np.ndarray], prefix: str, eps: float) -> str:
        gamma = self.const(prefix + ".weight", weights[prefix + ".weight"].astype(np.float32))
        beta = self.const(prefix + ".bias", weights[prefix + ".bias"].astype(np.float32))
        return self.op("LayerNormalization", [x, gamma, beta], axis=-1, epsilon=eps)


def build(weights: dict[str, np.ndarray], config: dict[str, Any], head: str = "encoder") -> onnx.ModelProto:
    if (
        config.get("model_type") not in ("bert", None)
        or config.get("position_embedding_type", "absolute") != "absolute"
    ):
        raise UnsupportedModel(f"model type {config.get('model_type')!r} is not a BERT encoder")
    prefix = "bert." if any(k.startswith("bert.") for k in weights) else ""
    w = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in weights.items()}
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim, eps = hidden // heads, float(config.get("layer_norm_eps", 1e-12))
    if config.get("hidden_act", "gelu") != "gelu":
        raise UnsupportedModel(f"activation {config.get('hidden_act')!r} is not supported")

    g = _Graph()
    ids, mask, types = "input_ids", "attention_mask", "token_type_ids"
    seq_len = g.op("Gather", [g.op("Shape", [ids]), g.const("one_i", np.array(1, dtype=np.int64))], axis=0)
    positions = g.op(
        "Range",
        [
            g.const("zero_i", np.array(0, dtype=np.int64)),
            seq_len,
            g.const("step_i", np.array(1, dtype=np.int64)),
        ],
    )
    x = g.op(
        "Add",
        [
            g.op(
                "Add",
                [
                    g.op(
                        "Gather",
                        [g.const("word_emb", w["embeddings.word_embeddings.weight"].astype(np.float32)), ids],
                    ),
                    g.op(
                        "Gather",
                        [
                            g.const("pos_emb", w["embeddings.position_embeddings.weight"].astype(np.float32)),
                            positions,
                        ],
                    ),
                ],
            ),
            g.op(
                "Gather",
                [g.const("type_emb", w["embeddings.token_type_embeddings.weight"].astype(np.float32)), types],
            ),
        ],
    )
    x = g.layer_norm(x, w, "embeddings.LayerNorm", eps)

    # Additive mask [batch, 1, 1, seq]: 0 where attended, a large negative number on padding.
    keep = g.op(
        "Unsqueeze", [g.op("Cast", [mask], to=TensorProto.FLOAT), g.const("axes_12", np.array([1, 2]))]
    )
    bias = g.op(
        "Mul",
        [
            g.op("Sub", [g.const("one_f", np.array(1.0, dtype=np.float32)), keep]),
            g.const("neg_f", np.array(np.finfo(np.float32).min, dtype=np.float32)),
        ],
    )
    split = g.const("split_shape", np.array([0, 0, heads, head_dim], dtype=np.int64))
    merge = g.const("merge_shape", np.array([0, 0, hidden], dtype=np.int64))
    scale = g.const("scale", np.array(1.0 / math.sqrt(head_dim), dtype=np.float32))
    sqrt2 = g.const("sqrt2", np.array(math.sqrt(2.0), dtype=np.float32))
    half = g.const("half", np.array(0.5, dtype=np.float32))

    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}."
        q = g.op(
            "Transpose",
            [g.op("Reshape", [g.linear(x, w, p + "attention.self.query"), split])],
            perm=[0, 2, 1, 3],
        )
        k = g.op(
            "Transpose",
            [g.op("Reshape", [g.linear(x, w, p + "attention.self.key"), split])],
            perm=[0, 2, 3, 1],
        )
        v = g.op(
            "Transpose",
            [g.op("Reshape", [g.linear(x, w, p + "attention.self.value"), split])],
            perm=[0, 2, 1, 3],
        )
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), bias])
        context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), merge])
        x = g.layer_norm(
            g.op("Add", [x, g.linear(context, w, p + "attention.output.dense")]),
            w,
            p + "attention.output.LayerNorm",
            eps,
        )
        h = g.linear(x, w, p + "intermediate.dense")
        h = g.op(
            "Mul",
            [
                g.op("Mul", [h, half]),
                g.op(
                    "Add",
                    [g.op("Erf", [g.op("Div", [h, sqrt2])]), g.const(f"one_{i}", np.array(1.0, np.float32))],
                ),
            ],
        )
        x = g.layer_norm(g.op("Add", [x, g.linear(h, w, p + "output.dense")]), w, p + "output.LayerNorm", eps)

    out_shape: list[str | int]
    if head == "encoder":
        out_name, out_shape = "last_hidden_state", ["batch", "sequence", hidden]
    elif head == "classifier":
        cls = g.op("Gather", [x, g.const("zero_idx", np.array(0, dtype=np.int64))], axis=1)
        pooled = g.op("Tanh", [g.linear(cls, w, "pooler.dense")])
        cw = weights["classifier.weight"]
        x = g.linear(
            pooled, {"classifier.weight": cw, "classifier.bias": weights["classifier.bias"]}, "classifier"
        )
        out_name, out_shape = "logits", ["batch", int(cw.shape[0])]
    else:
        raise ValueError(head)
    g.nodes.append(helper.make_node("Identity", [x], [out_name]))
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in (ids, mask, types)
    ]
    output = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(g.nodes, "bert", inputs, [output], g.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ferrousforge"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def convert_directory(model_dir: Path, head: str) -> onnx.ModelProto:
    """Convert a Hugging Face model folder (config.json + model.safetensors) to ONNX."""
    import json

    from safetensors.numpy import load_file

    config = json.loads((model_dir / "config.json").read_text())
    weights = load_file(str(model_dir / "model.safetensors"))
    return build(weights, config, head)


def quantize_int8(model_path: Path, out_path: Path) -> None:
    """Dynamic int8 quantization of the MatMul weights with per-channel scales.

    Per-tensor scales lose too much (cosine ~0.94 to fp32); so does quantizing the embedding tables
    (Gather), which only saves file size, not time.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(model_path),
        str(out_path),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
    )
