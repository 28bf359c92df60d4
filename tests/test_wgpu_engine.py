"""The wgpu engine (BERT on the GPU compute layer, here on lavapipe) against the ONNX engine, over real
HTTP, for the same stored models: embeddings agree to cosine ≥ 0.9999, rerank scores within 1e-4."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import Host, start_host
from test_embeddings import TEXTS, tiny_bert

WGPU = {"engine": "wgpu"}


@pytest.fixture(scope="module")
def bert_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    root = tmp_path_factory.mktemp("wgpu")
    for h in start_host(root / "store"):
        with h.client(timeout=300) as c:
            for name, source in (
                ("all-minilm", None),
                ("tiny-bert", str(tiny_bert(root / "bert"))),
                ("tiny-cross", str(tiny_bert(root / "cross", num_labels=1))),
            ):
                r = c.post("/api/pull", json={"model": name, "source": source, "stream": False})
                assert r.status_code == 200, r.text
        yield h


def embed(host: Host, model: str, texts: list[str], **options: object) -> tuple[np.ndarray, dict]:
    with host.client(timeout=300) as c:
        r = c.post("/api/embed", json={"model": model, "input": texts, "options": options})
    assert r.status_code == 200, r.text
    return np.array(r.json()["embeddings"]), r.json()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_tiny_bert_embeddings_match_onnx_with_padding(bert_host: Host, batch: int) -> None:
    texts = [t[:120] for t in TEXTS[:batch]]  # different lengths: padded batches
    ours, body = embed(bert_host, "tiny-bert", texts, **WGPU)
    ref, _ = embed(bert_host, "tiny-bert", texts)
    assert body["accelerator"] == "wgpu" and ours.shape == ref.shape
    assert cosines(ours, ref).min() >= 0.9999


def test_all_minilm_matches_onnx_including_a_long_input(bert_host: Host) -> None:
    texts = [TEXTS[0], TEXTS[2], TEXTS[3]]  # TEXTS[2] is over 256 tokens
    ours, _ = embed(bert_host, "all-minilm", texts, **WGPU)
    ref, _ = embed(bert_host, "all-minilm", texts)
    assert ours.shape == (3, 384)
    assert cosines(ours, ref).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # normalised as configured


def test_cross_encoder_scores_match_onnx(bert_host: Host) -> None:
    body = {
        "model": "tiny-cross",
        "query": "what is a cat",
        "documents": ["a cat is an animal", "tax law", "x"],
    }
    with bert_host.client(timeout=300) as c:
        ref = c.post("/api/rerank", json=body).json()["results"]
        ours = c.post("/api/rerank", json={**body, "options": WGPU})
    assert ours.status_code == 200, ours.text
    got = {r["index"]: r["relevance_score"] for r in ours.json()["results"]}
    for r in ref:
        assert abs(got[r["index"]] - r["relevance_score"]) <= 1e-4


def test_ps_and_info_say_which_engine_and_adapter_serve_a_model(bert_host: Host) -> None:
    embed(bert_host, "tiny-bert", ["hello"], **WGPU)
    embed(
        bert_host, "all-minilm", ["hello"], engine="onnx"
    )  # (auto would keep the wgpu load of an earlier test)
    with bert_host.client() as c:
        models = {m["name"]: m for m in c.get("/api/info").json()["models"]}
        running = {m["name"]: m for m in c.get("/api/ps").json()["models"]}
    wgpu, onnx = models["tiny-bert:latest"], running["all-minilm:latest"]
    assert (wgpu["engine"], wgpu["accelerator"]) == ("wgpu", "wgpu") and wgpu["adapter"]
    assert (
        running["tiny-bert:latest"]["engine"] == "wgpu"
        and running["tiny-bert:latest"]["adapter"] == wgpu["adapter"]
    )
    assert onnx["engine"] == "onnxruntime" and "adapter" not in onnx


def test_engine_names_are_checked(bert_host: Host, tiny_gguf: Path) -> None:
    with bert_host.client() as c:
        bad = c.post("/api/embed", json={"model": "tiny-bert", "input": "x", "options": {"engine": "tpu"}})
        assert bad.status_code == 400 and "must be one of auto, llama.cpp" in bad.json()["error"]
        c.post("/api/pull", json={"model": "tiny", "source": str(tiny_gguf), "stream": False})
        body = {"model": "tiny", "prompt": "the", "stream": False, "options": {"engine": "onnx"}}
        wrong = c.post("/api/generate", json=body)
        error = wrong.json()["error"]
        assert wrong.status_code == 400 and "engine 'onnxruntime' does not run gguf models" in error
        assert "(has: llama.cpp, wgpu)" in error


def test_the_server_can_prefer_wgpu(tmp_path: Path) -> None:
    for h in start_host(tmp_path / "store", engine="onnx=wgpu"):
        with h.client() as c:
            r = c.post(
                "/api/pull", json={"model": "b", "source": str(tiny_bert(tmp_path / "b")), "stream": False}
            )
            assert r.status_code == 200, r.text
        _, body = embed(h, "b", ["hello there"])
        assert body["accelerator"] == "wgpu"
        _, onnx = embed(h, "b", ["hello there"], engine="onnx")  # a request still chooses
        assert onnx["accelerator"] == "cpu"


def test_auto_takes_wgpu_only_where_a_hardware_adapter_measures_faster() -> None:
    from ferrousforge.mold import ModelSpec, resolve_mold
    from ferrousforge_host.engines.onnx import OnnxEmbeddingMold
    from ferrousforge_host.engines.wgpu import WgpuEmbeddingMold, device, matmul_gflops, wgpu_is_faster

    on_gpu, on_cpu = matmul_gflops(device(), m=32, n=64, k=64, runs=2)
    assert on_gpu > 0 and on_cpu > 0
    spec = ModelSpec("m", "onnx", "/nonexistent", config={"task": "embed"})
    expected = WgpuEmbeddingMold if wgpu_is_faster() else OnnxEmbeddingMold
    assert resolve_mold(spec) is expected
    if device().software:  # lavapipe, SwiftShader: never chosen by themselves
        assert expected is OnnxEmbeddingMold
    assert resolve_mold(spec, "wgpu") is WgpuEmbeddingMold
