"""The content-addressed store: verified, atomic, and nothing half-written left visible."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ferrousforge.errors import BadRequest, ModelNotFound
from ferrousforge.manifest import CONFIG_MEDIA_TYPE, MODEL, Layer, Manifest
from ferrousforge.names import ModelName
from ferrousforge_host.store import BlobStore, DigestMismatch


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_blob_write_verifies_and_mismatch_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    d, size = store.write_blob([b"ab", b"cd"], expected=digest(b"abcd"))
    assert (d, size) == (digest(b"abcd"), 4)
    assert store.blob_path(d).read_bytes() == b"abcd"
    with pytest.raises(DigestMismatch):
        store.write_blob([b"xyz"], expected=digest(b"other"))
    assert not store.has_blob(digest(b"xyz"))
    assert list(store.partial.iterdir()) == []


def test_interrupted_write_leaves_no_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)

    def chunks():  # type: ignore[no-untyped-def]
        yield b"part"
        raise ConnectionError("gone")

    with pytest.raises(ConnectionError):
        store.write_blob(chunks())
    assert list(store.blobs.iterdir()) == [] and list(store.partial.iterdir()) == []


def test_manifests_need_their_blobs_and_round_trip(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    name = ModelName.parse("m:1")
    cfg, cfg_size = store.write_bytes(b"{}")
    model = Layer(MODEL, digest(b"weights"), 7)
    manifest = Manifest(Layer(CONFIG_MEDIA_TYPE, cfg, cfg_size), (model,))
    with pytest.raises(BadRequest):
        store.put(name, manifest)
    assert not store.exists(name)
    store.write_bytes(b"weights")
    store.put(name, manifest)
    assert store.get(name).manifest == manifest
    assert [m.name.display for m in store.list()] == ["m:1"]
    assert not [p for p in store.manifests.rglob(".tmp-*")]
    store.delete(name)
    assert list(store.blobs.iterdir()) == []
    with pytest.raises(ModelNotFound):
        store.get(name)


def test_delete_keeps_blobs_of_work_in_flight_and_prune_at_start_takes_them(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    cfg, cfg_size = store.write_bytes(b"{}")
    weights, size = store.write_bytes(b"weights")
    layer = Layer(MODEL, weights, size)
    store.put(ModelName.parse("a"), Manifest(Layer(CONFIG_MEDIA_TYPE, cfg, cfg_size), (layer,)))
    store.put(ModelName.parse("b"), Manifest(Layer(CONFIG_MEDIA_TYPE, cfg, cfg_size), (layer,)))
    own, own_size = store.write_bytes(b"a's own")
    store.put(
        ModelName.parse("c"),
        Manifest(Layer(CONFIG_MEDIA_TYPE, cfg, cfg_size), (Layer(MODEL, own, own_size),)),
    )
    pulling, _ = store.write_bytes(b"a pull's finished blob, its manifest not written yet")
    scratch = store.partial / "upload-0123.partial"
    scratch.write_bytes(b"cut short")
    resumable = store.partial_path("https://example.org/model.gguf")
    resumable.write_bytes(b"half a download")
    assert store.manifest_path(ModelName.parse("a")).stat().st_mode & 0o777 == 0o644

    store.delete(ModelName.parse("c"))  # its own blob goes; the shared ones and the pull's stay
    assert not store.has_blob(own)
    assert all(store.has_blob(d) for d in (cfg, weights, pulling))
    store.delete(ModelName.parse("a"))
    assert store.has_blob(weights) and store.has_blob(pulling)  # b still uses the weights

    store.prune()  # at start: nothing is in flight
    assert not store.has_blob(pulling) and not scratch.exists()
    assert store.has_blob(weights) and resumable.exists()


def test_corrupt_manifests_are_skipped_in_listings(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    bad = store.manifest_path(ModelName.parse("broken"))
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    assert list(store.list()) == []
    with pytest.raises(ValueError):
        store.get(ModelName.parse("broken"))
    store.delete(ModelName.parse("broken"))  # and it can be removed
    assert not bad.exists()


def test_commit_checks_the_partial_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    partial = store.partial_path("http://x/y")
    partial.write_bytes(b"data")
    with pytest.raises(DigestMismatch):
        store.commit(partial, digest(b"else"))
    assert not partial.exists()
    partial.write_bytes(b"data")
    assert store.commit(partial, digest(b"data")) == digest(b"data")
    assert store.has_blob(digest(b"data"))
