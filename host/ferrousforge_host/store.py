"""Content-addressed model store: ``blobs/sha256-<hex>`` plus one manifest per ``name:tag``.

A blob becomes visible only after its sha256 is verified, by an atomic rename from ``partial/``;
manifests are written the same way. A failed write leaves at most a file under ``partial/``,
which a later pull of the same content resumes from.

Beside it, an Ollama store (the same layout) can be read in place: its models are listed, shown
and run, never written; a model of ours with the same name wins.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferrousforge.chat_format import check_template, is_go_template
from ferrousforge.errors import BadRequest, ForgeError, ModelNotFound
from ferrousforge.gguf import GGUFError, read_file_metadata, summarize
from ferrousforge.manifest import MODEL, Manifest, normalize_digest
from ferrousforge.names import DEFAULT_HOST, OLLAMA_REGISTRY, ModelName

CHUNK = 1 << 20
Progress = Callable[[int], None]
log = logging.getLogger("ferrousforge")


class DigestMismatch(BadRequest):
    pass


class StoreFull(ForgeError):
    """The disk filled up while writing: what was written is removed."""

    status = 507


class ReadOnlyModel(ForgeError):
    """A model of the Ollama store read in place: we never change or delete it."""

    status = 403

    def __init__(self, name: ModelName, root: Path) -> None:
        super().__init__(f"model '{name}' is read-only: it belongs to the Ollama store at {root}")


@dataclass(frozen=True)
class StoredModel:
    name: ModelName
    manifest: Manifest
    modified_at: float
    origin: Path | None = None  # the Ollama store it is read from; None: ours


# manifests as last read, by path, with the stat that dated them: a request's lookup is one stat (a
# manifest is replaced whole, by a rename, so a new one has a new inode)
_MANIFESTS: dict[Path, tuple[tuple[int, int, int], Manifest]] = {}


def _read_manifest(path: Path, name: ModelName, origin: Path | None = None) -> StoredModel | None:
    try:
        st = path.stat()
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        known = _MANIFESTS.get(path)
        if known is None or known[0] != stamp:
            known = _MANIFESTS[path] = (stamp, Manifest.from_bytes(path.read_bytes()))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        _MANIFESTS.pop(path, None)
        return None
    return StoredModel(name, known[1], st.st_mtime, origin)


def _list_manifests(manifests: Path, origin: Path | None = None) -> Iterator[StoredModel]:
    """Every ``<host>/<namespace>/<model>/<tag>`` manifest under ``manifests``."""
    for path in sorted(manifests.glob("*/*/*/*")):
        if not path.is_file() or path.name.startswith(".tmp-"):
            continue
        try:
            name = ModelName.parse(f"{path.parts[-4]}/{path.parts[-3]}/{path.parts[-2]}:{path.parts[-1]}")
            yield StoredModel(name, Manifest.from_bytes(path.read_bytes()), path.stat().st_mtime, origin)
        except (ValueError, OSError):
            continue  # a foreign or corrupt file is not a model


class OllamaStore:
    """An Ollama model store (``~/.ollama/models``), read in place and never written."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.manifests = self.root / "manifests"

    def blob_path(self, digest: str) -> Path:
        return self.root / "blobs" / normalize_digest(digest).replace(":", "-")

    def get(self, name: ModelName) -> StoredModel | None:
        host = OLLAMA_REGISTRY if name.host == DEFAULT_HOST else name.host
        path = self.manifests.joinpath(host, name.namespace, name.model, name.tag)
        return _read_manifest(path, name, self.root)

    def list(self) -> Iterator[StoredModel]:
        return _list_manifests(self.manifests, self.root)


def runnable_template(template: str | None, config: dict[str, Any]) -> str | None:
    """A model's template layer, or the GGUF's own chat template where the layer is a Go template
    FerrousForge cannot run (one that calls named templates)."""
    fallback = config.get("chat_template")
    if template and fallback and is_go_template(template):
        try:
            check_template(template)
        except BadRequest:
            return str(fallback)
    return template


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
            if progress:
                progress(len(block))
    return f"sha256:{digest.hexdigest()}"


def _fsync_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), 0o644)  # (mkstemp makes it 0600) readable as Ollama's manifests are
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class BlobStore:
    def __init__(self, root: Path, ollama: Path | None = None) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"
        self.partial = self.root / "partial"
        try:
            for d in (self.blobs, self.manifests, self.partial):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ForgeError(f"cannot use {self.root} as the model store: {exc.strerror or exc}") from None
        same = ollama is not None and Path(ollama).resolve() == self.root.resolve()
        self.ollama = OllamaStore(ollama) if ollama is not None and not same else None
        self._gguf_facts: dict[str, dict[str, Any]] = {}  # model blob digest → its GGUF summary

    # -- blobs ----------------------------------------------------------------------------
    def own_blob_path(self, digest: str) -> Path:
        """Where a blob of ours lives (or will, once written)."""
        return self.blobs / normalize_digest(digest).replace(":", "-")

    def blob_path(self, digest: str) -> Path:
        """Where to read a blob: ours, else the Ollama store's."""
        own = self.own_blob_path(digest)
        if self.ollama is None or own.is_file():
            return own
        theirs = self.ollama.blob_path(digest)
        return theirs if theirs.is_file() else own

    def full(self) -> StoreFull:
        return StoreFull(f"no space left in the model store {self.root}; nothing was kept")

    @contextlib.contextmanager
    def scratch(self, kind: str) -> Iterator[Path]:
        """A fresh partial file's path to write a blob to: a full disk becomes ``StoreFull``, and the
        file is gone afterwards unless it was moved into ``blobs/``."""
        path = self.partial / f"{kind}-{uuid.uuid4().hex}.partial"
        try:
            yield path
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise self.full() from None
            raise
        finally:
            path.unlink(missing_ok=True)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def verify_blob(self, digest: str) -> bool:
        """Is the blob here and intact? A blob whose bytes no longer match its name (disk error,
        someone edited it) is removed, so that it is fetched again and never served."""
        path = self.blob_path(digest)
        if not path.is_file():
            return False
        if sha256_file(path) == normalize_digest(digest):
            return True
        if path == self.own_blob_path(digest):  # the Ollama store's are not ours to remove
            path.unlink(missing_ok=True)
        return False

    def partial_path(self, key: str) -> Path:
        safe = hashlib.sha256(key.encode()).hexdigest() if not key.startswith("sha256:") else key[7:]
        return self.partial / f"{safe}.partial"

    def commit(self, partial: Path, expected: str | None, progress: Progress | None = None) -> str:
        """Verify a finished partial file and move it into ``blobs/``; returns its digest."""
        actual = sha256_file(partial, progress)
        if expected is not None and actual != normalize_digest(expected):
            partial.unlink(missing_ok=True)
            raise DigestMismatch(f"digest mismatch: expected {expected}, got {actual}")
        with partial.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, self.own_blob_path(actual))
        return actual

    def write_blob(self, chunks: Iterable[bytes], expected: str | None = None) -> tuple[str, int]:
        """Stream bytes into a new blob, verified against ``expected`` if given."""
        digest, size = hashlib.sha256(), 0
        with self.scratch("upload") as tmp:
            with tmp.open("wb") as f:
                for block in chunks:
                    digest.update(block)
                    f.write(block)
                    size += len(block)
                f.flush()
                os.fsync(f.fileno())
            actual = f"sha256:{digest.hexdigest()}"
            if expected is not None and actual != normalize_digest(expected):
                raise DigestMismatch(f"digest mismatch: expected {expected}, got {actual}")
            os.replace(tmp, self.own_blob_path(actual))
            return actual, size

    def write_bytes(self, data: bytes) -> tuple[str, int]:
        return self.write_blob([data])

    def read_bytes(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def _adopt(self, digest: str) -> bool:
        """Take a blob the Ollama store has into ours: a hard link where it can, else a copy."""
        source = self.ollama.blob_path(digest) if self.ollama else None
        if source is None or not source.is_file():
            return False
        with self.scratch("adopt") as tmp:
            try:
                os.link(source, tmp)
            except OSError:  # another file system, or no hard links there
                shutil.copyfile(source, tmp)
            os.replace(tmp, self.own_blob_path(digest))
        return True

    def config(self, manifest: Manifest) -> dict[str, Any]:
        """A model's config. Ollama's config blobs lack what FerrousForge reads from the GGUF at
        import (special tokens, context length, model_info): that is filled in from the model file."""
        config: dict[str, Any] = json.loads(self.read_bytes(manifest.config.digest))
        model = manifest.layer(MODEL)
        if "model_info" in config or model is None:
            return config
        facts = self._gguf_facts.get(model.digest)
        if facts is None:
            try:
                meta = read_file_metadata(
                    str(self.blob_path(model.digest)), keep_arrays=frozenset({"tokenizer.ggml.tokens"})
                )
                facts = summarize(meta)
            except (GGUFError, OSError) as exc:
                log.warning("cannot read the GGUF metadata of %s: %s", model.digest, exc)
                facts = {}
            self._gguf_facts[model.digest] = facts
        return {**facts, **config}

    # -- manifests ------------------------------------------------------------------------
    def manifest_path(self, name: ModelName) -> Path:
        """Where a model's manifest is: a name matches one that differs only in case, as Ollama's do."""
        exact = self.manifests.joinpath(*name.parts)
        if exact.is_file():
            return exact
        return next(iter(self._case_variants(name)), exact)

    def _case_variants(self, name: ModelName) -> list[Path]:
        """The manifests whose names differ from ``name`` at most in case."""
        found = [self.manifests]
        for part in name.parts:
            found = [
                p
                for here in found
                if here.is_dir()
                for p in sorted(here.iterdir())
                if p.name.lower() == part.lower()
            ]
        return [p for p in found if p.is_file()]

    def get(self, name: ModelName) -> StoredModel:
        found = _read_manifest(self.manifest_path(name), name)
        if found is None and self.ollama is not None:
            found = self.ollama.get(name)
        if found is None:
            raise ModelNotFound(name.display)
        return found

    def exists(self, name: ModelName) -> bool:
        return self.manifest_path(name).is_file() or self.read_only(name) is not None

    def read_only(self, name: ModelName) -> Path | None:
        """The Ollama store a model is read from, when it is not ours."""
        if self.ollama is None or self.manifest_path(name).is_file():
            return None
        return self.ollama.root if self.ollama.get(name) is not None else None

    def check_writable(self, name: ModelName) -> None:
        if (root := self.read_only(name)) is not None:
            raise ReadOnlyModel(name, root)

    def put(self, name: ModelName, manifest: Manifest) -> None:
        """Write a manifest; blobs it shares with the Ollama store are taken in (linked) first."""
        self.check_writable(name)
        ours = {d for d in manifest.digests() if self.own_blob_path(d).is_file()}
        missing = [d for d in sorted(manifest.digests() - ours) if not self._adopt(d)]
        if missing:
            raise BadRequest(f"manifest refers to missing blobs: {', '.join(missing)}")
        exact = self.manifests.joinpath(*name.parts)
        try:
            _fsync_write(exact, manifest.to_bytes())  # the name as last written, case and all
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise self.full() from None
            raise
        for other in self._case_variants(name):  # the same name in another case, now replaced
            if not os.path.samefile(other, exact):
                self._remove_manifest(other)

    def delete(self, name: ModelName) -> None:
        path = self.manifest_path(name)
        self.check_writable(name)
        if not path.is_file():
            raise ModelNotFound(name.display)
        try:
            found = _read_manifest(path, name)
        except (ValueError, OSError):  # a damaged manifest goes too; its blobs wait for the next prune
            found = None
        self._remove_manifest(path)
        if found is not None:  # its own blobs that no other model uses; not those of pulls in flight
            self.discard(found.manifest.digests())

    def _remove_manifest(self, path: Path) -> None:
        path.unlink()
        for parent in path.parents:
            if parent == self.manifests:
                break
            with contextlib.suppress(OSError):
                parent.rmdir()

    def list(self) -> Iterator[StoredModel]:
        """Our models, then the Ollama store's that no model of ours shadows."""
        names = set()
        for model in _list_manifests(self.manifests):
            names.add(model.name)
            yield model
        if self.ollama is not None:
            yield from (m for m in self.ollama.list() if m.name not in names)

    def discard(self, digests: Iterable[str]) -> None:
        """Remove these blobs unless a manifest refers to them."""
        used = {d for m in _list_manifests(self.manifests) for d in m.manifest.digests()}
        for digest in set(digests) - used:
            self.own_blob_path(digest).unlink(missing_ok=True)

    def prune(self) -> None:
        """Remove blobs no manifest of ours refers to (at start, as Ollama does: a pull or create that
        was cut short leaves its blobs behind)."""
        used = {d for m in _list_manifests(self.manifests) for d in m.manifest.digests()}
        for blob in self.blobs.glob("sha256-*"):
            if blob.name.replace("-", ":", 1) not in used:
                blob.unlink(missing_ok=True)
        # scratch files ("upload-<uuid>.partial"); a pull's resumable ones ("<hex>.partial") stay
        for scratch in self.partial.glob("*-*.partial"):
            scratch.unlink(missing_ok=True)
