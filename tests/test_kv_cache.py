"""The KV cache's type (Ollama's OLLAMA_KV_CACHE_TYPE) and flash attention (OLLAMA_FLASH_ATTENTION):
a quantized cache holds the same tokens in less memory, falls back to f16 where it cannot be had, and
every report of the model's size follows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import llama_cpp as L
import pytest

from ferrousforge.errors import BadRequest
from ferrousforge.generation import GenerationInput
from ferrousforge.mold import ModelSpec
from ferrousforge.options import Options
from ferrousforge_host.config import load_settings
from ferrousforge_host.engines.llamacpp import LlamaCppMold

from conftest import Host, start_host
from tinymodel import write_tiny_llama


@pytest.fixture(scope="module")
def wide_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Heads of 64 values: whole blocks of 32, as real models' are."""
    return write_tiny_llama(tmp_path_factory.mktemp("models") / "wide.gguf", q4k=True)


PROMPT = " ".join(["the cat sat"] * 40)


def cached_state(path: Path, **options: object) -> tuple[dict[str, object], int, int, str]:
    """Load, read a prompt of 120 tokens and generate greedily, and read back: the model's metadata, its
    memory estimate, the bytes llama.cpp's state of that sequence takes (its KV cells, in the cache's
    type), the text."""
    opts = Options.parse({"num_thread": 1, "num_ctx": 256, "temperature": 0, **options})
    mold = LlamaCppMold(ModelSpec("m", "gguf", str(path)), opts)
    mold.load_sync()
    try:
        text = "".join(
            c.text
            for c in mold.stream_sync(GenerationInput(PROMPT, dataclasses.replace(opts, num_predict=8)))
        )
        return mold.metadata(), mold.memory_bytes(), L.llama_state_seq_get_size(mold._ctx, 0), text
    finally:
        mold.unload_sync()


def test_a_quantized_cache_holds_the_same_tokens_in_the_bytes_its_type_says(wide_gguf: Path) -> None:
    f16, q8, q4 = (cached_state(wide_gguf, kv_cache_type=t) for t in ("f16", "q8_0", "q4_0"))
    assert [s[0]["kv_cache_type"] for s in (f16, q8, q4)] == ["f16", "q8_0", "q4_0"]
    assert f16[3] and q8[3] and q4[3]  # each generated
    # what llama.cpp holds for the sequence's cells: 2 bytes a value, 34 per 32, 18 per 32 (and a
    # few bytes a cell for its position, the same in each)
    assert q4[2] < q8[2] < 0.56 * f16[2]
    assert (f16[2] - q4[2]) / (f16[2] - q8[2]) == pytest.approx((64 - 18) / (64 - 34), rel=1e-3)
    # and the size reported (/api/ps, the scheduler's budget) shrinks by the cache's difference
    file_bytes = wide_gguf.stat().st_size
    assert (q8[1] - file_bytes) / (f16[1] - file_bytes) == pytest.approx(34 / 64)
    estimate = LlamaCppMold.estimate_bytes(
        ModelSpec("m", "gguf", str(wide_gguf)), Options(num_ctx=256, kv_cache_type="q8_0")
    )
    assert estimate == q8[1]


def test_where_a_quantized_cache_cannot_be_had_the_model_loads_with_f16(
    tiny_gguf: Path, wide_gguf: Path
) -> None:
    narrow = cached_state(tiny_gguf, kv_cache_type="q8_0")  # heads of 16 values
    assert narrow[0]["kv_cache_type"] == "f16" and narrow[3]
    assert narrow[3] == cached_state(tiny_gguf)[3]
    off = cached_state(wide_gguf, kv_cache_type="q4_0", flash_attention="off")
    assert off[0]["kv_cache_type"] == "f16" and off[3]


def test_options_name_the_choices() -> None:
    with pytest.raises(BadRequest, match="kv_cache_type' must be one of f16, q8_0, q4_0"):
        Options.parse({"kv_cache_type": "q5_1"})
    with pytest.raises(BadRequest, match="flash_attention' must be one of auto, on, off"):
        Options.parse({"flash_attention": True})


def test_ollamas_variables_set_them_and_a_bad_value_says_which(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_KV_CACHE_TYPE", "q8_0")
    monkeypatch.setenv("OLLAMA_FLASH_ATTENTION", "1")
    settings = load_settings()
    assert (settings.kv_cache_type, settings.flash_attention) == ("q8_0", "on")
    monkeypatch.setenv("OLLAMA_FLASH_ATTENTION", "false")
    assert load_settings().flash_attention == "off"
    monkeypatch.setenv("FERROUSFORGE_KV_CACHE_TYPE", "q5")
    with pytest.raises(BadRequest, match="FERROUSFORGE_KV_CACHE_TYPE='q5': one of f16, q8_0, q4_0"):
        load_settings()


def test_the_servers_setting_reaches_the_runner_and_every_report(tmp_path: Path, wide_gguf: Path) -> None:
    sizes = {}
    for kind in ("f16", "q8_0"):
        for host in start_host(tmp_path / kind, kv_cache_type=kind):
            host.pull_file("wide", wide_gguf)
            with host.client() as c:
                r = c.post(
                    "/api/generate", json={"model": "wide", "prompt": "hi", "options": {"num_predict": 2}}
                )
                assert r.status_code == 200, r.text
                (info,) = c.get("/api/info").json()["models"]
                assert info["kv_cache_type"] == kind and info["runner_pid"]
                sizes[kind] = c.get("/api/ps").json()["models"][0]["size"]
                bad = c.post("/api/generate", json={"model": "wide", "options": {"kv_cache_type": "q2"}})
                assert bad.status_code == 400 and "kv_cache_type" in bad.json()["error"]
    assert sizes["q8_0"] < sizes["f16"]


def test_a_modelfile_gives_one_model_its_own_cache_type(host: Host, wide_gguf: Path) -> None:
    host.pull_file("wide", wide_gguf)
    with host.client() as c:
        made = c.post(
            "/api/create", json={"model": "wide-q4", "modelfile": "FROM wide\nPARAMETER kv_cache_type q4_0"}
        )
        assert made.status_code == 200, made.text
        assert "kv_cache_type" in c.post("/api/show", json={"model": "wide-q4"}).json()["parameters"]
        for name in ("wide", "wide-q4"):
            r = c.post("/api/generate", json={"model": name, "prompt": "hi", "options": {"num_predict": 2}})
            assert r.status_code == 200, r.text
        types = {m["name"]: m["kv_cache_type"] for m in c.get("/api/info").json()["models"]}
        assert types == {"wide:latest": "f16", "wide-q4:latest": "q4_0"}
