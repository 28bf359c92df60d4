"""Faults and boundaries: import folders, broken model files, concurrent pulls, a corrupt manifest."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from pathlib import Path

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from ferrousforge.manifest import Manifest

from conftest import Host, start_host


def test_local_sources_must_come_from_allowed_folders(tmp_path: Path, tiny_gguf: Path) -> None:
    allowed = tmp_path / "imports"
    allowed.mkdir()
    (allowed / "ok.gguf").write_bytes(tiny_gguf.read_bytes())
    (allowed / "escape.gguf").symlink_to(tiny_gguf)  # a link out of the folder does not count as inside
    for h in start_host(tmp_path / "store", import_dirs=str(allowed)):
        with h.client() as c:
            ok = c.post(
                "/api/pull", json={"model": "ok", "source": str(allowed / "ok.gguf"), "stream": False}
            )
            assert ok.status_code == 200, ok.text
            for source in (
                str(tiny_gguf),
                str(allowed / "escape.gguf"),
                str(allowed / ".." / "x.gguf"),
                "/etc/passwd",
            ):
                r = c.post("/api/pull", json={"model": "bad", "source": source, "stream": False})
                assert r.status_code == 400 and "outside the allowed import folders" in r.json()["error"], (
                    source
                )
            assert [m["name"] for m in c.get("/api/tags").json()["models"]] == ["ok:latest"]


def test_a_broken_model_file_fails_clearly_and_the_server_keeps_serving(host: Host, tmp_path: Path) -> None:
    blob = next(p for p in (host.store_root / "blobs").iterdir() if p.stat().st_size > 100_000)
    with host.client() as c:
        assert c.post("/api/copy", json={"source": "tiny", "destination": "broken"}).status_code == 200
        # point "broken" at a truncated copy of the weights through a new blob and manifest
        data = blob.read_bytes()[:5000]
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert c.post(f"/api/blobs/{digest}", content=data).status_code == 201
        r = c.post("/api/create", json={"model": "broken", "files": {"b.gguf": digest}, "stream": False})
        assert r.status_code == 400 and "GGUF" in r.json()["error"]  # refused at create already
        manifest_path = host.store_root / "manifests/local/library/broken/latest"
        manifest = json.loads(manifest_path.read_text())
        manifest["layers"][0]["digest"] = digest  # a store damaged behind the server's back
        manifest_path.write_text(json.dumps(manifest))
        r = c.post("/api/generate", json={"model": "broken", "prompt": "x", "stream": False})
        assert r.status_code == 500 and "cannot load 'broken:latest'" in r.json()["error"]
        # a file our reader takes but llama.cpp refuses: the answer says what llama.cpp said
        alien = blob.read_bytes().replace(
            b"\x05\x00\x00\x00\x00\x00\x00\x00llama", b"\x05" + b"\x00" * 7 + b"lxama"
        )
        digest = "sha256:" + hashlib.sha256(alien).hexdigest()
        assert c.post(f"/api/blobs/{digest}", content=alien).status_code == 201
        r = c.post("/api/create", json={"model": "alien", "files": {"a.gguf": digest}, "stream": False})
        assert r.status_code == 200, r.text
        r = c.post("/api/generate", json={"model": "alien", "prompt": "x", "stream": False})
        assert r.status_code == 500 and "unknown model architecture: 'lxama'" in r.json()["error"], r.text
        ok = c.post(
            "/api/generate",
            json={"model": "tiny", "prompt": "x", "stream": False, "options": {"num_predict": 2}},
        )
        assert ok.status_code == 200


async def four_pulls(url: str, source: str) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as c:
        body = {"model": "web", "source": source, "stream": False}
        rs = await asyncio.gather(*(c.post("/api/pull", json=body) for _ in range(4)))
    return [r.status_code for r in rs]


def test_concurrent_pulls_of_one_model_download_once(tmp_path: Path, tiny_gguf: Path) -> None:
    from fileserver import serve_files

    with serve_files({"m/tiny.gguf": tiny_gguf.read_bytes()}) as fs:
        for h in start_host(tmp_path / "store"):
            assert asyncio.run(four_pulls(h.url, f"{fs.url}/m/tiny.gguf")) == [200] * 4
            downloads = [r for r in fs.requests if r[0] == "GET"]
            assert len(downloads) == 1, downloads


@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
@settings(max_examples=300, deadline=None)
def test_manifest_parser_fuzz_only_raises_value_error(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        Manifest.from_bytes(data)


def test_manifest_parser_accepts_its_own_output() -> None:
    raw = {
        "schemaVersion": 2,
        "config": {"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": 2},
        "layers": [{"mediaType": "y", "digest": "sha256-" + "b" * 64, "size": 3, "name": "f"}],
    }
    m = Manifest.from_bytes(json.dumps(raw).encode())
    assert Manifest.from_bytes(m.to_bytes()) == m
