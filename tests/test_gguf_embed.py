"""GGUF embedding models on llama.cpp's embedding path: a tiny random BERT written by the test, checked
against a NumPy forward pass of the same weights, over Ollama's and OpenAI's APIs and their clients;
and /api/embed's unit-length vectors for ONNX models as well."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import ollama
import openai
import pytest

from conftest import Host, runner_pid, start_host
from tinymodel import BERT_SPECIALS, WORDS, write_tiny_bert

N_CTX = 64


@pytest.fixture(scope="module")
def berts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bert")
    return {
        "bert": write_tiny_bert(d / "mean.gguf", n_ctx=N_CTX),
        "bert-cls": write_tiny_bert(d / "cls.gguf", seed=1, pooling=gguf.PoolingType.CLS),
        "bert-nopool": write_tiny_bert(d / "nopool.gguf", seed=2, pooling=None),
    }


@pytest.fixture(scope="module")
def bert_host(
    tmp_path_factory: pytest.TempPathFactory, berts: dict[str, Path], tiny_gguf: Path
) -> Iterator[Host]:
    for h in start_host(tmp_path_factory.mktemp("bert-store")):
        for name, path in berts.items():
            h.pull_file(name, path)
        h.pull_file("tiny", tiny_gguf)
        yield h


def ids(text: str) -> list[int]:
    """The tiny vocabulary's WordPiece ids of a text made of its words: [CLS] words [SEP]."""
    return [2, *(len(BERT_SPECIALS) + WORDS.index(w) for w in text.split()), 3]


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def layer_norm(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12)
    return x * w[name + ".weight"] + w[name + ".bias"]


def reference(path: Path, tokens: list[int], pooling: str = "mean") -> np.ndarray:
    """BERT's forward pass in NumPy over the GGUF's weights, pooled, unit length."""
    w = {t.name: np.asarray(t.data, dtype=np.float64) for t in gguf.GGUFReader(path).tensors}
    n = len(tokens)
    x = w["token_embd.weight"][tokens] + w["token_types.weight"][0] + w["position_embd.weight"][:n]
    x = layer_norm(x, w, "token_embd_norm")
    heads = 2
    for i in range(2):
        p = f"blk.{i}."

        def lin(name: str, v: np.ndarray, p: str = p) -> np.ndarray:
            return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q, k, v = (lin(m, x).reshape(n, heads, -1).transpose(1, 0, 2) for m in ("attn_q", "attn_k", "attn_v"))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
        att = np.exp(scores - scores.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        x = layer_norm(
            x + lin("attn_output", (att @ v).transpose(1, 0, 2).reshape(n, -1)), w, p + "attn_output_norm"
        )
        x = layer_norm(x + lin("ffn_down", gelu(lin("ffn_up", x))), w, p + "layer_output_norm")
    out = x[0] if pooling == "cls" else x.mean(0)
    return out / np.linalg.norm(out)


def embed(host: Host, model: str, inputs: str | list[str], **extra: object) -> dict[str, Any]:
    with host.client() as c:
        r = c.post("/api/embed", json={"model": model, "input": inputs, **extra})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


TEXTS = ["the of and", "it is not that", "this was for you", "one", "they are with the one which"]


def test_embed_matches_a_numpy_bert_and_is_unit_length(bert_host: Host, berts: dict[str, Path]) -> None:
    out = embed(bert_host, "bert", TEXTS)
    vectors = np.array(out["embeddings"])
    assert vectors.shape == (len(TEXTS), 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    for text, vec in zip(TEXTS, vectors, strict=True):
        assert np.abs(vec - reference(berts["bert"], ids(text))).max() < 2e-3
    assert out["prompt_eval_count"] == sum(len(ids(t)) for t in TEXTS)
    assert out["model"] == "bert:latest"
    # the runner hosts it, as every native engine's model
    assert runner_pid(bert_host, "bert") != os.getpid()


@pytest.mark.parametrize(("model", "pooling"), [("bert-cls", "cls"), ("bert-nopool", "mean")])
def test_pooling_comes_from_the_gguf(
    bert_host: Host, berts: dict[str, Path], model: str, pooling: str
) -> None:
    vec = np.array(embed(bert_host, model, "it is not that")["embeddings"][0])
    assert np.abs(vec - reference(berts[model], ids("it is not that"), pooling)).max() < 2e-3
    other = "mean" if pooling == "cls" else "cls"
    assert np.abs(vec - reference(berts[model], ids("it is not that"), other)).max() > 0.05


def test_batched_equals_single_and_is_deterministic(bert_host: Host) -> None:
    single = [np.array(embed(bert_host, "bert", t)["embeddings"][0]) for t in TEXTS]
    batched = np.array(embed(bert_host, "bert", TEXTS)["embeddings"])
    again = np.array(embed(bert_host, "bert", TEXTS)["embeddings"])
    assert np.allclose(batched, single, atol=1e-5)
    assert np.array_equal(batched, again)
    assert np.abs(batched[0] - batched[1]).max() > 0.05  # different texts, different vectors
    # a token budget of 12 per decode: the five inputs go in several decodes, with the same result
    small = np.array(embed(bert_host, "bert", TEXTS, options={"num_batch": 12})["embeddings"])
    assert np.allclose(small, single, atol=1e-5)


def test_truncation_as_ollama(bert_host: Host, berts: dict[str, Path]) -> None:
    long = "the of " * 40  # 80 words: longer than the 64-token window
    with bert_host.client() as c:
        refused = c.post("/api/embed", json={"model": "bert", "input": long, "truncate": False})
        fits = c.post("/api/embed", json={"model": "bert", "input": "the of", "truncate": False})
    assert refused.status_code == 400 and "longer than the model's context of 64" in refused.json()["error"]
    assert fits.status_code == 200
    out = embed(bert_host, "bert", long)
    assert out["prompt_eval_count"] == N_CTX
    cut = [*ids(long)[: N_CTX - 1], 3]  # [CLS] the first 62 words [SEP]
    assert np.abs(np.array(out["embeddings"][0]) - reference(berts["bert"], cut)).max() < 2e-3


def test_legacy_openai_ollama_client_and_dimensions(bert_host: Host) -> None:
    unit = np.array(embed(bert_host, "bert", "this was for you")["embeddings"][0])
    with bert_host.client() as c:
        legacy = np.array(
            c.post("/api/embeddings", json={"model": "bert", "prompt": "this was for you"}).json()[
                "embedding"
            ]
        )
    assert abs(np.linalg.norm(legacy) - 1) > 0.1  # the model's own vector, as Ollama's legacy endpoint
    assert np.allclose(legacy / np.linalg.norm(legacy), unit, atol=1e-5)

    client = openai.OpenAI(base_url=bert_host.url + "/v1", api_key="unused")
    res = client.embeddings.create(model="bert", input=["this was for you", "one"])
    assert len(res.data) == 2 and np.allclose(res.data[0].embedding, unit, atol=1e-5)
    assert res.usage.prompt_tokens == len(ids("this was for you")) + len(ids("one"))
    tokens = client.embeddings.create(model="bert", input=[ids("this was for you")], encoding_format="float")
    assert np.allclose(tokens.data[0].embedding, unit, atol=1e-5)

    out = ollama.Client(host=bert_host.url).embed(model="bert", input=["this was for you", "one"])
    assert np.allclose(out.embeddings[0], unit, atol=1e-5) and len(out.embeddings[1]) == 32

    short = np.array(embed(bert_host, "bert", "this was for you", dimensions=8)["embeddings"][0])
    assert short.shape == (8,) and np.allclose(short, unit[:8] / np.linalg.norm(unit[:8]), atol=1e-5)


def test_task_from_gguf_metadata() -> None:
    from ferrousforge.mold import model_task

    def gguf_config(arch: str, **info: object) -> dict[str, Any]:
        return {
            "model_format": "gguf",
            "model_family": arch,
            "model_info": {"general.architecture": arch, **info},
        }

    assert model_task(gguf_config("llama")) == "generate"
    assert model_task(gguf_config("qwen3", **{"qwen3.pooling_type": 3})) == "embed"  # Qwen3-Embedding
    assert model_task(gguf_config("nomic-bert")) == "embed"  # an encoder, with or without pooling
    assert model_task({"model_family": "bert"}) == "embed"  # a config stored without model_info
    assert model_task({"task": "rerank", **gguf_config("bert")}) == "rerank"


def test_rerank_by_cosine(bert_host: Host) -> None:
    docs = ["it is not that", "the of and", "this was for you"]
    vectors = np.array(embed(bert_host, "bert", ["the of", *docs])["embeddings"])
    with bert_host.client() as c:
        r = c.post("/api/rerank", json={"model": "bert", "query": "the of", "documents": docs}).json()
    scores = {row["index"]: row["relevance_score"] for row in r["results"]}
    assert [row["index"] for row in r["results"]] == list(np.argsort(-(vectors[1:] @ vectors[0])))
    assert np.allclose([scores[i] for i in range(3)], vectors[1:] @ vectors[0], atol=1e-5)


def test_show_capabilities_and_generate_refused(bert_host: Host) -> None:
    with bert_host.client() as c:
        show = c.post("/api/show", json={"model": "bert"}).json()
        nopool = c.post("/api/show", json={"model": "bert-nopool"}).json()
        generative = c.post("/api/show", json={"model": "tiny"}).json()
        gen = c.post("/api/generate", json={"model": "bert", "prompt": "hi", "stream": False})
        chat = c.post("/api/chat", json={"model": "bert", "messages": [{"role": "user", "content": "hi"}]})
        bad_token = c.post("/v1/embeddings", json={"model": "bert", "input": [[5, 9999]]})
    assert show["capabilities"] == ["embedding"] and nopool["capabilities"] == ["embedding"]
    assert show["details"]["family"] == "bert"
    assert "completion" in generative["capabilities"]
    assert gen.status_code == 400 and "does not support generate" in gen.json()["error"]
    assert chat.status_code == 400 and "does not support" in chat.json()["error"]
    assert bad_token.status_code == 400 and "outside the model's vocabulary" in bad_token.text


def test_onnx_embed_is_unit_length_and_legacy_is_not(host: Host, tmp_path: Path) -> None:
    """A sentence-transformers-less BERT folder (no Normalize module): /api/embed still normalises."""
    from test_embeddings import tiny_bert

    model_dir = tiny_bert(tmp_path / "plain-bert")
    with host.client(timeout=120) as c:
        pulled = c.post("/api/pull", json={"model": "plain-bert", "source": str(model_dir), "stream": False})
        assert pulled.status_code == 200, pulled.text
        r = c.post("/api/embed", json={"model": "plain-bert", "input": ["hello world", "x"]}).json()
        legacy = c.post("/api/embeddings", json={"model": "plain-bert", "prompt": "hello world"}).json()
    vectors = np.array(r["embeddings"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    raw = np.array(legacy["embedding"])
    assert abs(np.linalg.norm(raw) - 1) > 0.1
    assert np.allclose(raw / np.linalg.norm(raw), vectors[0], atol=1e-5)
