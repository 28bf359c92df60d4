"""LoRA adapters (Ollama's ADAPTER): a GGUF adapter applied over a GGUF model by llama.cpp gives what
the same weights merged give; made through /api/create's ``adapters``, ``from`` a model, or a Modelfile
through the CLI; a file that is no adapter for the model is a 400 when the model is made."""

from __future__ import annotations

from pathlib import Path

import httpx
import ollama
import pytest
from test_vision import upload

from conftest import Host
from test_cli import ff
from tinymodel import write_tiny_llama, write_tiny_lora

GREEDY = {"temperature": 0, "num_predict": 24}


@pytest.fixture(scope="module")
def lora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A LoRA adapter for the tiny model, and the tiny model with the adapter's product merged in."""
    folder = tmp_path_factory.mktemp("lora")
    adapter, deltas = write_tiny_lora(folder / "lora.gguf")
    return adapter, write_tiny_llama(folder / "merged.gguf", merged=deltas)


def reply(c: httpx.Client, model: str, **options: object) -> str:
    body = {
        "model": model,
        "prompt": "the cat sat",
        "raw": True,
        "stream": False,
        "options": GREEDY | options,
    }
    r = c.post("/api/generate", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["response"])


def test_an_adapter_gives_what_its_weights_merged_give(
    host: Host, tiny_gguf: Path, lora: tuple[Path, Path]
) -> None:
    adapter, merged = lora
    with host.client() as c:
        files = {"tiny.gguf": upload(c, tiny_gguf)}
        made = c.post(
            "/api/create",
            json={
                "model": "tuned",
                "files": files,
                "adapters": {"lora.gguf": upload(c, adapter)},
                "stream": False,
            },
        )
        assert made.status_code == 200, made.text
        client = ollama.Client(host=host.url)  # the official client's own way: a blob, then adapters
        client.create("retuned", from_="tiny", adapters={"x.gguf": client.create_blob(adapter)})
        merged_made = c.post("/api/create", json={"model": "merged", "files": {"m.gguf": upload(c, merged)}})
        assert merged_made.status_code == 200, merged_made.text
        want = reply(c, "merged")
        assert reply(c, "tuned") == want and reply(c, "retuned") == want
        assert reply(c, "tiny") != want  # the adapter changes what the model says
        show = c.post("/api/show", json={"model": "tuned"}).json()
        assert show["modelfile"].count("\nADAPTER ") == 1
        running = {m["name"]: m["size"] for m in c.get("/api/ps").json()["models"]}
        assert running["tuned:latest"] - running["tiny:latest"] == adapter.stat().st_size
        page = c.post("/api/browser/model", json={"model": "tuned"}).json()
        assert page["files"]["adapter.0"]["digest"] == digest_of(adapter)  # (the page runs it on the host)
        wgpu = c.post("/api/generate", json={"model": "tuned", "prompt": "hi", "options": {"engine": "wgpu"}})
        assert wgpu.status_code == 400 and "LoRA adapters need the llama.cpp engine" in wgpu.json()["error"]
        # made again while loaded, without its adapter and then with it: each answer is the new model's
        plain = reply(c, "tiny")
        assert c.post("/api/create", json={"model": "tuned", "from": "tiny"}).status_code == 200
        assert reply(c, "tuned") == plain
        again = {"model": "tuned", "from": "tiny", "adapters": {"lora.gguf": digest_of(adapter)}}
        assert c.post("/api/create", json=again).status_code == 200
        assert reply(c, "tuned") == want


def digest_of(path: Path) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_what_is_no_adapter_for_the_model_is_refused_when_it_is_made(
    host: Host, tmp_path: Path, tiny_gguf: Path, lora: tuple[Path, Path]
) -> None:
    other_arch, _ = write_tiny_lora(tmp_path / "gemma-lora.gguf", architecture="gemma3")
    wide = write_tiny_llama(tmp_path / "wide.gguf", q4k=True)  # 256 wide: the 64-wide pairs do not fit
    with host.client() as c:
        for path in (other_arch, wide, tiny_gguf, lora[0]):
            upload(c, path)
        wide_made = c.post("/api/create", json={"model": "wide", "files": {"w.gguf": digest_of(wide)}})
        assert wide_made.status_code == 200
        cases = [
            ({"from": "tiny", "adapters": {"t.gguf": digest_of(tiny_gguf)}}, "t.gguf is not a LoRA adapter"),
            (
                {"from": "tiny", "adapters": {"g.gguf": digest_of(other_arch)}},
                "for gemma3 models; this model is llama",
            ),
            (
                {"from": "wide", "adapters": {"l.gguf": digest_of(lora[0])}},
                "blk.0.attn_q.weight pair does not fit",
            ),
            ({"from": "tiny", "adapters": {"l.gguf": "sha256:" + "2" * 64}}, "not found: upload it"),
            ({"modelfile": "FROM tiny\nADAPTER ./lora.gguf"}, "upload it (POST /api/blobs/<digest>)"),
            (
                {"files": {"l.gguf": digest_of(lora[0])}, "stream": False},
                "a LoRA adapter, not a model: use it",
            ),
        ]
        for body, needle in cases:
            r = c.post("/api/create", json={"model": "bad", **body})
            assert r.status_code == 400 and needle in r.json()["error"], r.text
        assert "bad:latest" not in {m["name"] for m in c.get("/api/tags").json()["models"]}
        by_digest = c.post(
            "/api/create", json={"model": "ok", "modelfile": f"FROM tiny\nADAPTER @{digest_of(lora[0])}"}
        )
        assert by_digest.status_code == 200, by_digest.text


def test_a_modelfile_adapter_through_the_cli(
    host: Host, tmp_path: Path, tiny_gguf: Path, lora: tuple[Path, Path]
) -> None:
    adapter, merged = lora
    (tmp_path / "base.gguf").write_bytes(tiny_gguf.read_bytes())
    (tmp_path / "lora.gguf").write_bytes(adapter.read_bytes())
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM ./base.gguf\nADAPTER ./lora.gguf\n")
    out = ff(host, "create", "tuned", "-f", str(modelfile))
    assert out.returncode == 0, out.stderr
    host.pull_file("merged", merged)
    with host.client() as c:
        assert reply(c, "tuned") == reply(c, "merged")
    modelfile.write_text("FROM tiny\nADAPTER ./missing.gguf\n")
    missing = ff(host, "create", "nope", "-f", str(modelfile))
    assert missing.returncode != 0 and "no adapter file at" in missing.stderr


def test_a_model_with_an_adapter_goes_through_a_registry_and_keeps_it(
    tmp_path: Path, tiny_gguf: Path, lora: tuple[Path, Path]
) -> None:
    """Pushed, the adapter layer goes with the model (Ollama's media type); pulled by another
    server, the model runs with it."""
    from oci_registry import serve_registry

    from conftest import start_host

    adapter, merged = lora
    with serve_registry() as registry:
        name = f"{registry.url.removeprefix('http://')}/team/tuned"
        for h in start_host(tmp_path / "a", registry="https://registry.invalid"):
            h.pull_file("tiny", tiny_gguf)
            client = ollama.Client(host=h.url)
            client.create(name, from_="tiny", adapters={"lora.gguf": client.create_blob(adapter)})
            assert client.push(name, insecure=True).status == "success"
            with h.client() as c:
                want = reply(c, name)
        assert digest_of(adapter) in registry.blobs
        for h in start_host(tmp_path / "b", registry="https://registry.invalid"):
            assert ollama.Client(host=h.url).pull(name, insecure=True).status == "success"
            h.pull_file("merged", merged)
            with h.client() as c:
                assert reply(c, name) == want == reply(c, "merged")
