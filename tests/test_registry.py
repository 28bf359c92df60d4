"""Pulls from an Ollama registry (a real OCI registry on 127.0.0.1) and an Ollama store read in place."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest
from oci_registry import Registry, digest, serve_registry

from ferrousforge.manifest import CONFIG_MEDIA_TYPE, MODEL, PARAMS, TEMPLATE, Layer, Manifest
from ferrousforge.names import ModelName
from ferrousforge_host.config import load_settings
from ferrousforge_host.models.registry import Registry as RegistryConfig
from ferrousforge_host.store import BlobStore

from conftest import Host, free_port, start_host

GO_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n"
)
# Ollama's library templates loop over messages
RANGE_TEMPLATE = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
PARAMS_JSON = json.dumps({"stop": ["<|im_end|>"], "temperature": 0.5}).encode()
OLLAMA_CONFIG = {
    "model_format": "gguf",
    "model_family": "llama",
    "model_families": ["llama"],
    "model_type": "1M",
    "file_type": "Q4_K_M",
    "architecture": "amd64",
    "os": "linux",
}


@pytest.fixture
def registry(tiny_gguf: Path) -> Iterator[Registry]:
    with serve_registry() as reg:
        layers = [(MODEL, tiny_gguf.read_bytes()), (TEMPLATE, GO_TEMPLATE.encode()), (PARAMS, PARAMS_JSON)]
        reg.add("library/tiny:latest", layers, OLLAMA_CONFIG)
        yield reg


@pytest.fixture
def host(tmp_path: Path, registry: Registry) -> Iterator[Host]:
    """A server whose default registry is the test registry, with an empty store."""
    yield from start_host(tmp_path / "store", registry=registry.url)


def pull(host: Host, body: dict[str, object]) -> httpx.Response:
    with host.client() as c:
        return c.post("/api/pull", json={"stream": False, **body})


def model_digest(reg: Registry) -> str:
    manifest = json.loads(reg.manifests["library/tiny:latest"])
    return str(next(x["digest"] for x in manifest["layers"] if x["mediaType"] == MODEL))


def test_pull_streams_ollama_progress_then_the_model_generates(host: Host, registry: Registry) -> None:
    with host.client() as c, c.stream("POST", "/api/pull", json={"model": "tiny"}) as r:
        assert r.status_code == 200
        events = [json.loads(line) for line in r.iter_lines() if line]
    statuses = [e["status"] for e in events]
    assert statuses[0] == "pulling manifest" and statuses[-2:] == ["writing manifest", "success"]
    assert "verifying sha256 digest" in statuses
    big = model_digest(registry)
    done = [e for e in events if e.get("digest") == big]
    assert done[-1]["status"] == f"pulling {big[7:19]}"
    assert done[-1]["total"] == done[-1]["completed"] == len(registry.blobs[big])

    stored = Manifest.from_bytes((host.store_root / "manifests/local/library/tiny/latest").read_bytes())
    assert stored == Manifest.from_bytes(registry.manifests["library/tiny:latest"])
    assert all((host.store_root / "blobs" / d.replace(":", "-")).is_file() for d in stored.digests())

    with host.client() as c:
        assert [m["name"] for m in c.get("/api/tags").json()["models"]] == ["tiny:latest"]
        shown = c.post("/api/show", json={"model": "tiny"}).json()
        assert shown["template"] == GO_TEMPLATE and "<|im_end|>" in shown["parameters"]
        assert shown["details"]["family"] == "llama" and shown["details"]["quantization_level"] == "Q4_K_M"
        assert shown["model_info"]["general.architecture"] == "llama"  # read from the GGUF
        r = c.post("/api/generate", json={"model": "tiny", "prompt": "the", "options": {"num_predict": 4}})
        assert r.status_code == 200, r.text
        final = [json.loads(line) for line in r.text.splitlines()][-1]
        assert final["done"] and final["eval_count"] >= 1


def test_ollama_client_pulls_by_registry_address_then_generates(tmp_path: Path, registry: Registry) -> None:
    name = f"{registry.url.removeprefix('http://')}/library/tiny:latest"
    for h in start_host(tmp_path / "store", registry="https://registry.invalid"):  # the name says where
        client = ollama.Client(host=h.url)
        events = list(client.pull(name, insecure=True, stream=True))
        assert events[0].status == "pulling manifest" and events[-1].status == "success"
        assert [m.model for m in client.list().models] == [name]
        reply = client.generate(name, "the", options={"num_predict": 3, "temperature": 0})
        assert reply.done and reply.eval_count
        assert client.show(name).template == GO_TEMPLATE


def test_bearer_token_challenge(host: Host, registry: Registry) -> None:
    registry.token = "t0ken"
    assert pull(host, {"model": "tiny"}).json() == {"status": "success"}
    first, token, *rest = registry.requests
    assert first[0] == "/v2/library/tiny/manifests/latest" and first[2] is None
    assert token[0].startswith("/token?") and "scope=repository%3Alibrary%2Ftiny%3Apull" in token[0]
    assert rest and all(auth == "Bearer t0ken" for _, _, auth in rest)


def test_interrupted_blob_resumes_from_the_partial_file(host: Host, registry: Registry) -> None:
    big = model_digest(registry)
    size = len(registry.blobs[big])
    registry.cut[big] = size // 2
    r = pull(host, {"model": "tiny"})
    assert r.status_code == 502 and "resume" in r.json()["error"]
    assert not (host.store_root / "manifests/local/library/tiny").exists()
    assert (host.store_root / "partial" / f"{big[7:]}.partial").stat().st_size == size // 2

    assert pull(host, {"model": "tiny"}).json() == {"status": "success"}
    ranges = [rng for path, rng, _ in registry.requests if path.endswith(big)]
    assert ranges == [None, f"bytes={size // 2}-"]
    assert registry.served[big] == size  # half, then only the rest
    assert not list((host.store_root / "partial").iterdir())


def test_wrong_blob_is_rejected_and_nothing_is_committed(host: Host, registry: Registry) -> None:
    big = model_digest(registry)
    registry.wrong.add(big)
    r = pull(host, {"model": "tiny"})
    assert r.status_code == 400 and "digest mismatch" in r.json()["error"]
    assert not (host.store_root / "blobs" / big.replace(":", "-")).exists()
    assert not list((host.store_root / "partial").iterdir())
    assert not (host.store_root / "manifests/local").exists()
    with host.client() as c:
        assert c.get("/api/tags").json() == {"models": []}


def test_unknown_model_and_unreachable_registry(host: Host, registry: Registry) -> None:
    r = pull(host, {"model": "no-such-model"})
    assert r.status_code == 404 and "pull model manifest: file does not exist" in r.json()["error"]
    registry.add("library/safetensors:latest", [("application/vnd.ollama.image.tensor", b"x")], OLLAMA_CONFIG)
    r = pull(host, {"model": "safetensors"})
    assert r.status_code == 400 and "no GGUF model layer" in r.json()["error"]
    r = pull(host, {"model": f"127.0.0.1:{free_port()}/library/x:y"})
    assert r.status_code == 502 and "cannot reach" in r.json()["error"]
    assert "--from /path/model.gguf" in r.json()["error"]  # what works without that registry
    assert not list((host.store_root / "manifests").iterdir())


def test_push_uploads_what_the_registry_lacks_and_another_host_pulls_it(
    tmp_path: Path, tiny_gguf: Path, registry: Registry
) -> None:
    """``ollama push`` to a registry of one's own: blobs the registry lacks, then the manifest; a
    second push uploads nothing; another server pulls the model back and it generates."""
    name = f"{registry.url.removeprefix('http://')}/team/tiny"
    for h in start_host(tmp_path / "a", registry="https://registry.invalid"):
        h.pull_file("tiny", tiny_gguf)
        client = ollama.Client(host=h.url)
        assert client.copy("tiny", name).status == "success"
        there = set(registry.blobs)  # the registry holds library/tiny: its GGUF blob is the same
        events = list(client.push(name, insecure=True, stream=True))
        statuses = [e.status for e in events]
        assert statuses[0] == "retrieving manifest" and statuses[-2:] == ["pushing manifest", "success"]
        ours = Manifest.from_bytes((h.store_root / "manifests/local/library/tiny/latest").read_bytes())
        assert sorted(registry.uploaded) == sorted(set(ours.digests()) - there) != []
        finished = [e for e in events if e.digest and e.completed == e.total]
        assert {e.digest for e in finished} == set(ours.digests())
        assert Manifest.from_bytes(registry.manifests["team/tiny:latest"]) == ours
        registry.uploaded.clear()
        env = {**os.environ, "FERROUSFORGE_HOST": h.url.removeprefix("http://")}
        cli = [sys.executable, "-m", "ferrousforge_host.cli", "push", name, "--insecure"]
        out = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0 and f"pushed {name}" in out.stderr, out.stderr
        assert registry.uploaded == []  # every blob was there already
    for h in start_host(tmp_path / "b", registry="https://registry.invalid"):
        client = ollama.Client(host=h.url)
        assert client.pull(name, insecure=True).status == "success"
        assert client.generate(name, "the", options={"num_predict": 3}).eval_count


def test_push_answers_a_bearer_challenge_and_refuses_what_it_cannot_do(
    tmp_path: Path, tiny_gguf: Path, registry: Registry
) -> None:
    registry.token = "t0ken"
    name = f"{registry.url.removeprefix('http://')}/team/tiny"
    for h in start_host(tmp_path / "a", registry="https://registry.ollama.ai"):
        h.pull_file("tiny", tiny_gguf)
        with h.client() as c:
            assert c.post("/api/copy", json={"source": "tiny", "destination": name}).status_code == 200
            pushed = c.post("/api/push", json={"model": name, "insecure": True, "stream": False})
            assert pushed.status_code == 200 and pushed.json() == {"status": "success"}, pushed.text
            assert "team/tiny:latest" in registry.manifests
            token = next(path for path, _, _ in registry.requests if path.startswith("/token"))
            assert "scope=repository%3Ateam%2Ftiny%3Apush%2Cpull" in token
            # Ollama's registry takes pushes signed with an ollama.com key only: said before anything moves
            ollamas = c.post("/api/push", json={"model": "tiny", "stream": False})
            assert ollamas.status_code == 403 and "ollama.com account key" in ollamas.json()["error"]
            assert "ferrousforge cp tiny" in ollamas.json()["error"]
            missing = c.post("/api/push", json={"model": f"{name}-nope", "insecure": True})
            assert missing.status_code == 404 and "not found" in missing.json()["error"]
            nowhere = f"127.0.0.1:{free_port()}/team/tiny"  # a registry that is not running
            assert c.post("/api/copy", json={"source": "tiny", "destination": nowhere}).status_code == 200
            down = c.post("/api/push", json={"model": nowhere, "stream": False})
            assert down.status_code == 502 and "cannot reach the registry" in down.json()["error"]


def test_names_and_registry_addresses() -> None:
    assert ModelName.parse("registry.ollama.ai/library/qwen3:0.6b") == ModelName.parse("qwen3:0.6b")
    name = ModelName.parse("myhost:5000/ns/model:tag")
    assert name.parts == ("myhost:5000", "ns", "model", "tag") and name.display == "myhost:5000/ns/model:tag"
    default = RegistryConfig()
    assert default.repository(ModelName.parse("llama3.2")) == "https://registry.ollama.ai/v2/library/llama3.2"
    assert default.repository(name) == "https://myhost:5000/v2/ns/model"
    assert default.repository(name, insecure=True) == "http://myhost:5000/v2/ns/model"
    assert RegistryConfig(insecure=True).repository(name) == "http://myhost:5000/v2/ns/model"
    local = ModelName.parse("localhost:8080/a/b")
    assert default.repository(local) == "http://localhost:8080/v2/a/b"
    assert RegistryConfig("").repository(ModelName.parse("x")) is None  # registry pulls off
    assert RegistryConfig("").repository(local) is None


# -- an Ollama store read in place --------------------------------------------------------------


def write_ollama_store(root: Path, gguf: bytes) -> dict[str, str]:
    """Ollama's layout: ``blobs/sha256-<hex>``, ``manifests/registry.ollama.ai/library/olla/latest``."""
    layers = [(MODEL, gguf), (TEMPLATE, RANGE_TEMPLATE.encode()), (PARAMS, PARAMS_JSON)]
    config = json.dumps(OLLAMA_CONFIG).encode()
    blobs = root / "blobs"
    blobs.mkdir(parents=True)
    for data in (config, *(d for _, d in layers)):
        (blobs / digest(data).replace(":", "-")).write_bytes(data)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": digest(config),
            "size": len(config),
        },
        "layers": [{"mediaType": t, "digest": digest(d), "size": len(d)} for t, d in layers],
    }
    path = root / "manifests/registry.ollama.ai/library/olla/latest"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    return {str(p.relative_to(root)): digest(p.read_bytes()) for p in root.rglob("*") if p.is_file()}


def test_ollama_store_is_listed_shown_and_run_read_only(tmp_path: Path, tiny_gguf: Path) -> None:
    ollama_root = tmp_path / "ollama"
    before = write_ollama_store(ollama_root, tiny_gguf.read_bytes())
    for h in start_host(tmp_path / "store", ollama_models=str(ollama_root)):
        with h.client() as c:
            [entry] = c.get("/api/tags").json()["models"]
            assert entry["name"] == "olla:latest" and entry["ollama_store"] == str(ollama_root)
            assert entry["details"]["family"] == "llama"
            shown = c.post("/api/show", json={"model": "olla"}).json()
            assert (
                "<|im_end|>" in shown["parameters"] and shown["model_info"]["general.architecture"] == "llama"
            )
            chat = {"model": "olla", "messages": [{"role": "user", "content": "hi"}], "stream": False}
            r = c.post("/api/chat", json={**chat, "options": {"num_predict": 3}})
            assert r.status_code == 200 and r.json()["done"], r.text

            refused = f"model 'olla:latest' is read-only: it belongs to the Ollama store at {ollama_root}"
            for method, path, body in (
                ("DELETE", "/api/delete", {"model": "olla"}),
                ("POST", "/api/copy", {"source": "olla", "destination": "olla"}),
                ("POST", "/api/create", {"model": "olla", "from": "olla", "system": "be brief"}),
                ("POST", "/api/pull", {"model": "olla", "stream": False}),
            ):
                r = c.request(method, path, json=body)
                assert r.status_code == 403 and r.json()["error"] == refused, (path, r.text)
            assert not list((tmp_path / "store" / "blobs").iterdir())  # nothing half-written

            # a copy under a name of ours takes its blobs in (linked), leaving the Ollama store alone
            assert c.post("/api/copy", json={"source": "olla", "destination": "mine"}).status_code == 200
            assert len(list((tmp_path / "store" / "blobs").iterdir())) == 4
            assert c.request("DELETE", "/api/delete", json={"model": "mine"}).status_code == 200

        env = {**os.environ, "FERROUSFORGE_HOST": h.url.removeprefix("http://"), "COLUMNS": "120"}
        listed = subprocess.run(
            [sys.executable, "-m", "ferrousforge_host.cli", "list"], capture_output=True, text=True, env=env
        )
        assert "olla:latest (ollama, read-only)" in listed.stdout, listed.stderr
    after = {
        str(p.relative_to(ollama_root)): digest(p.read_bytes()) for p in ollama_root.rglob("*") if p.is_file()
    }
    assert after == before  # nothing written there
    assert not list((tmp_path / "store" / "blobs").iterdir())  # nothing copied here to run it


def test_our_model_of_the_same_name_wins(tmp_path: Path, tiny_gguf: Path) -> None:
    ollama_root = tmp_path / "ollama"
    write_ollama_store(ollama_root, tiny_gguf.read_bytes())
    name = ModelName.parse("olla")
    ours = BlobStore(tmp_path / "store")  # made before the Ollama store was read beside it
    config, size = ours.write_bytes(b"{}")
    own = Manifest(Layer(CONFIG_MEDIA_TYPE, config, size))
    ours.put(name, own)
    both = BlobStore(tmp_path / "store", ollama_root)
    assert both.get(name).manifest == own and both.read_only(name) is None
    assert [(m.name.display, m.origin) for m in both.list()] == [("olla:latest", None)]
    both.delete(name)  # ours goes; the Ollama store's shows again
    assert both.get(name).origin == ollama_root and both.read_only(name) == ollama_root


def test_settings_find_and_turn_off_the_ollama_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "manifests").mkdir()
    monkeypatch.setenv("FERROUSFORGE_CONFIG", "")  # no config file
    monkeypatch.delenv("FERROUSFORGE_OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path))
    assert load_settings().ollama_store == tmp_path
    monkeypatch.setenv("FERROUSFORGE_OLLAMA_MODELS", "")  # off, even with $OLLAMA_MODELS set
    assert load_settings().ollama_store is None
    monkeypatch.setenv("FERROUSFORGE_REGISTRY", "")
    assert load_settings().registry == ""
