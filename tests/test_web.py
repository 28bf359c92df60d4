"""The host's browser side over real HTTP: the isolated demo site, content-addressed blobs with Range
and immutable caching, model facts for browsers; and the placement rules the browser applies."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferrousforge.placement import (
    BROWSER_WASM,
    BROWSER_WEBGPU,
    HOST,
    Accelerator,
    Capabilities,
    Requirements,
    decide,
    estimate_requirements,
)

from conftest import Host, start_host

ROOT = Path(__file__).resolve().parents[1]


def test_demo_site_is_cross_origin_isolated(host: Host) -> None:
    with host.client() as c:
        page = c.get("/ui/")
        assert page.status_code == 200 and "<title>FerrousForge</title>" in page.text
        assert page.headers["cross-origin-opener-policy"] == "same-origin"
        assert page.headers["cross-origin-embedder-policy"] == "require-corp"
        assert c.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
        script = c.get("/ui/forge.mjs")
        assert "javascript" in script.headers["content-type"]
        assert script.headers["cross-origin-resource-policy"] == "same-origin"
        assert c.get("/ui/../pyproject.toml").status_code == 404
        assert c.get("/ui/no-such-file.js").status_code == 404
        plain = c.get("/ui/?isolated=0")  # the page as a site without cross-origin isolation serves it
        assert plain.status_code == 200 and "cross-origin-opener-policy" not in plain.headers


@pytest.mark.skipif(
    not (ROOT / "build/runtime/assets.json").exists(), reason="runtime bundle not built (make web)"
)
def test_runtime_bundle_is_served_with_hashes(host: Host) -> None:
    with host.client() as c:
        assets = c.get("/ui/runtime/assets.json").json()
        wheel = c.get(f"/ui/runtime/{assets['wheel']}")
        assert wheel.status_code == 200
        assert hashlib.sha256(wheel.content).hexdigest() == assets["assets"][assets["wheel"]]["sha256"]
        assert wheel.headers["cross-origin-embedder-policy"] == "require-corp"
        versions = {a["package"]: a.get("version") for a in assets["assets"].values()}
        assert versions["pyodide"] and versions["onnxruntime-web"] and versions["@huggingface/tokenizers"]


def test_blobs_by_digest_with_range_and_immutable_caching(host: Host) -> None:
    with host.client() as c:
        info = c.post("/api/browser/model", json={"model": "tiny"}).json()
        model = info["files"]["model"]
        full = c.get(model["url"])
        assert full.status_code == 200 and len(full.content) == model["size"]
        assert "sha256:" + hashlib.sha256(full.content).hexdigest() == model["digest"]
        assert "immutable" in full.headers["cache-control"]
        assert full.headers["cross-origin-resource-policy"] == "same-origin"
        part = c.get(model["url"], headers={"Range": "bytes=4-11"})
        assert part.status_code == 206 and part.content == full.content[4:12]
        assert c.get("/api/blobs/sha256:" + "0" * 64).status_code == 404
        bad = c.get("/api/blobs/sha256:../../etc")
        assert bad.status_code == 400 and "invalid digest" in bad.json()["error"]


def test_browser_model_facts(host: Host) -> None:
    with host.client() as c:
        info = c.post("/api/browser/model", json={"model": "tiny"}).json()
        assert info["kind"] == "generate" and info["format"] == "gguf"
        assert "im_start" in info["template"] and info["system"] is None  # what the page renders prompts with
        # the page renders templates as the host does
        assert info["config"]["bos_token"] == "<s>" and info["config"]["strip_bos"] is True
        req = info["requirements"]
        assert not req["needs_threads"]  # 0.5 MB: fine on one wasm thread
        assert req["bytes"] == info["files"]["model"]["size"] and req["memory"] > req["bytes"]
        assert c.post("/api/browser/model", json={"model": "missing"}).status_code == 404
        assert c.post("/api/browser/model", json={"model": 3}).status_code == 400


@pytest.fixture
def keyed(tmp_path: Path) -> Iterator[Host]:
    yield from start_host(tmp_path / "store", api_keys="k1")


def test_demo_site_loads_without_a_key_but_model_files_need_one(keyed: Host) -> None:
    with keyed.client() as c:
        assert c.get("/ui/").status_code == 200
        assert c.get("/ui/kernels.mjs").status_code == 200
        assert c.get("/api/blobs/sha256:" + "0" * 64).status_code == 401
        assert c.post("/api/browser/model", json={"model": "x"}).status_code == 401


# -- placement ---------------------------------------------------------------------------------
MINILM = Requirements(bytes=90 << 20, memory=256 << 20, gflop_per_item=0.7, min_items_per_s=5.0)


def caps(*accelerators: Accelerator, isolated: bool = True, memory_gb: float = 8.0) -> Capabilities:
    return Capabilities(list(accelerators), device_memory_gb=memory_gb, isolated=isolated, cores=2)


def test_measured_speed_ranks_accelerators_and_software_webgpu_goes_last() -> None:
    wasm = Accelerator(BROWSER_WASM, gflops=20.0, threads=2)
    swiftshader = Accelerator(BROWSER_WEBGPU, gflops=30.0, software=True)  # even if it measured faster
    real_gpu = Accelerator(BROWSER_WEBGPU, gflops=200.0)
    assert [a.name for a in caps(swiftshader, wasm).ranked()] == [BROWSER_WASM, BROWSER_WEBGPU]
    assert decide(caps(real_gpu, wasm), MINILM).placement == BROWSER_WEBGPU
    assert decide(caps(wasm, swiftshader), MINILM).placement == BROWSER_WASM
    broken = Accelerator(BROWSER_WASM, gflops=0.0, error="probe failed")
    assert decide(caps(broken), MINILM).placement == HOST


def test_an_accelerator_can_be_forced_even_when_it_is_a_software_adapter() -> None:
    wasm = Accelerator(BROWSER_WASM, gflops=20.0, threads=2)
    swiftshader = Accelerator(BROWSER_WEBGPU, gflops=0.5, software=True)  # too slow for "auto"
    assert decide(caps(wasm, swiftshader), MINILM).placement == BROWSER_WASM
    forced = decide(caps(wasm, swiftshader), MINILM, override=BROWSER_WEBGPU)
    assert (forced.placement, forced.candidates) == (BROWSER_WEBGPU, [BROWSER_WEBGPU])
    assert decide(caps(swiftshader, wasm), MINILM, override=BROWSER_WASM).placement == BROWSER_WASM
    missing = decide(caps(wasm), MINILM, override=BROWSER_WEBGPU)
    assert missing.placement == HOST and "browser-webgpu requested but unavailable" in missing.reason
    broken = Accelerator(BROWSER_WEBGPU, gflops=0.0, error="no WebGPU adapter")
    assert "no WebGPU adapter" in decide(caps(wasm, broken), MINILM, override=BROWSER_WEBGPU).reason


def test_budget_features_threads_and_minimum_speed_send_work_to_the_host() -> None:
    wasm = Accelerator(BROWSER_WASM, gflops=20.0, threads=2)
    small = caps(wasm, memory_gb=0.5)
    decision = decide(small, MINILM)
    assert decision.placement == HOST and "over the browser budget" in decision.reason
    small.budget_bytes = 1 << 30
    assert decide(small, MINILM).placement == BROWSER_WASM
    f16 = Requirements(1 << 20, 1 << 20, 0.1, 1.0, features=frozenset({"shader-f16"}))
    gpu = Accelerator(BROWSER_WEBGPU, gflops=100.0)
    assert "lacks shader-f16" in decide(caps(gpu), f16).reason
    gpu.features = frozenset({"shader-f16"})
    assert decide(caps(gpu), f16).placement == BROWSER_WEBGPU
    slow = Accelerator(BROWSER_WASM, gflops=2.0)
    decision = decide(caps(slow), MINILM)
    assert decision.placement == HOST and "under the 5/s" in decision.reason
    threaded = Requirements(1 << 20, 1 << 20, 0.1, 1.0, needs_threads=True)
    assert "not cross-origin isolated" in decide(caps(wasm, isolated=False), threaded).reason
    huge = Requirements(3 << 30, 3 << 30, 1.0, 1.0)
    assert "ArrayBuffer" in decide(caps(wasm, memory_gb=64), huge).reason


def test_policy_and_override() -> None:
    wasm = Accelerator(BROWSER_WASM, gflops=20.0, threads=2)
    c = caps(wasm)
    assert decide(c, MINILM, prefer="host").placement == HOST
    assert decide(c, MINILM, prefer="host", override="browser").placement == BROWSER_WASM
    assert decide(c, MINILM, override="host").placement == HOST
    slow = caps(Accelerator(BROWSER_WASM, gflops=1.0))
    assert decide(slow, MINILM, override="browser").placement == BROWSER_WASM  # asked for, even if slow
    fast_host = {HOST: 400.0, BROWSER_WASM: 30.0}
    assert decide(c, MINILM, prefer="fastest", measured=fast_host).placement == HOST
    assert decide(c, MINILM, prefer="browser", measured=fast_host).placement == BROWSER_WASM
    assert decide(c, MINILM, prefer="fastest", measured={HOST: 10.0}).placement == BROWSER_WASM
    with pytest.raises(ValueError):
        decide(c, MINILM, override="moon")


def test_capabilities_round_trip_and_estimates() -> None:
    c = caps(
        Accelerator(BROWSER_WASM, gflops=12.5, threads=2), Accelerator(BROWSER_WEBGPU, 0.0, error="none")
    )
    again = Capabilities.from_json(c.to_json())
    assert again.to_json() == c.to_json() and c.to_json()["ranking"] == [BROWSER_WASM]
    gen = estimate_requirements("generate", 400 << 20)
    emb = estimate_requirements("embed", 90 << 20)
    assert gen.needs_threads and gen.memory > gen.bytes and emb.gflop_per_item > 0
    assert Requirements.from_json(gen.to_json()) == gen


def test_a_gguf_model_carries_its_vocabulary_for_the_pages_gpu_engine(host: Host) -> None:
    """Created models get tokenizer.json and tokens.json layers; one stored without them (pulled from a
    registry, or before this) gets them when a browser first asks, kept in its manifest."""
    from ferrousforge.manifest import TOKENIZER, Manifest
    from ferrousforge.names import ModelName
    from ferrousforge_host.store import BlobStore

    with host.client() as c:
        files = c.post("/api/browser/model", json={"model": "tiny"}).json()["files"]
        assert {"model", "tokenizer.json", "tokens.json"} <= files.keys()
        facts = c.get(files["tokens.json"]["url"]).json()
        assert facts["add_bos"] is True and facts["bos"] == 1 and 2 in facts["eog"]
        assert "<|im_start|>" in c.get(files["tokenizer.json"]["url"]).text
        store, name = BlobStore(host.store_root), ModelName.parse("tiny")
        c.post("/api/copy", json={"source": "tiny", "destination": "bare"})
        bare = store.get(ModelName.parse("bare")).manifest
        kept = tuple(x for x in bare.layers if x.name not in ("tokenizer.json", "tokens.json"))
        store.put(ModelName.parse("bare"), Manifest(bare.config, kept))
        again = c.post("/api/browser/model", json={"model": "bare"}).json()["files"]
        assert again["tokenizer.json"]["digest"] == files["tokenizer.json"]["digest"]
        assert store.get(ModelName.parse("bare")).manifest.layer(TOKENIZER) is not None
        assert store.get(name).manifest.layer(TOKENIZER) is not None
        assert c.request("DELETE", "/api/delete", json={"model": "bare"}).status_code == 200


def test_a_gguf_takes_webgpu_only_on_a_hardware_adapter_or_when_forced() -> None:
    """The page's GPU decoder: chosen for a GGUF by itself only on a hardware adapter the probe ranks
    first (and only with the tokenizer.json the host made); a software one only when forced; Piper's
    voices never leave wasm."""
    from ferrousforge.placement import may_run

    wasm = Accelerator(BROWSER_WASM, gflops=20.0, threads=2)
    swiftshader = Accelerator(BROWSER_WEBGPU, gflops=30.0, software=True)
    real_gpu = Accelerator(BROWSER_WEBGPU, gflops=200.0, max_buffer=1 << 30)
    files = {"model", "tokenizer.json", "tokens.json"}
    tiny_gguf = estimate_requirements("generate", 600_000)

    def place(*accs: Accelerator, override: str = "auto", named: set[str] = files) -> str:
        allowed = [a for a in accs if may_run("gguf", "generate", named, a, override)]
        return decide(caps(*allowed), tiny_gguf, override=override).placement

    assert place(real_gpu, wasm) == BROWSER_WEBGPU
    assert place(swiftshader, wasm) == BROWSER_WASM
    assert place(swiftshader, wasm, override=BROWSER_WEBGPU) == BROWSER_WEBGPU
    assert place(real_gpu, wasm, named={"model"}) == BROWSER_WASM  # no vocabulary for the page's decoder
    assert place(real_gpu, wasm, override=BROWSER_WEBGPU, named={"model"}) == HOST
    assert not may_run("onnx", "speech", {"model"}, real_gpu, "auto")
    assert may_run("onnx", "embed", {"model"}, swiftshader, "auto")  # ranked last by decide, not barred


def test_the_runtimes_typescript_declarations_check_and_match_it(host: Host) -> None:
    """web/forge.d.mts type-checks a page using every call as docs/browser.md shows it (and refuses
    the mistakes it marks), names exactly the members forge.mjs gives, and is served beside it."""
    import re
    import subprocess

    tsc = ROOT / "node_modules" / ".bin" / "tsc"
    out = subprocess.run([str(tsc), "-p", str(ROOT / "tests" / "types")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    source = (ROOT / "web" / "forge.mjs").read_text()
    declared = (ROOT / "web" / "forge.d.mts").read_text()

    def block(text: str, start: str) -> str:
        return text[text.index(start) : text.index("\n}", text.index(start))]

    def members(body: str) -> set[str]:
        return set(re.findall(r"^\s+(?:get |readonly )?(\w+)[?(:,]", body, re.M))

    calls = members(block(declared, "export interface Forge {"))
    booted = calls | members(block(declared, "export interface BootedForge"))
    installed = calls | members(block(declared, "export interface InstalledForge"))
    made = source[source.index("  return {\n    pyodide,") : source.index("\n  };\n}\n\n/** `window.forge`")]
    assert booted == members(made)
    assert installed == members(block(source, "  const forge = {"))
    with host.client() as c:
        r = c.get("/ui/forge.d.mts")
        assert r.status_code == 200 and "export function install" in r.text
        assert r.headers["content-type"].startswith("application/typescript")
