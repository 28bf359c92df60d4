"""Content-addressed model store: ``blobs/sha256-<hex>`` plus one manifest per ``name:tag``.

A blob becomes visible only after its sha256 is verified, by an atomic rename from ``partial/``;
manifests are written the same way. A failed write leaves at most a file under ``partial/``,
which a later pull of the same content resumes from.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ferrousforge.errors import BadRequest, ForgeError, ModelNotFound
from ferrousforge.manifest import Manifest, normalize_digest
from ferrousforge.names import ModelName

CHUNK = 1 << 20
Progress = Callable[[int], None]


class DigestMismatch(BadRequest):
    pass


class StoreFull(ForgeError):
    """The disk filled up while writing: what was written is removed."""

    status = 507


@dataclass(frozen=True)
class StoredModel:
    name: ModelName
    manifest: Manifest
    modified_at: float


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
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs"
        self.manifests = self.root / "manifests"
        self.partial = self.root / "partial"
        for d in (self.blobs, self.manifests, self.partial):
            d.mkdir(parents=True, exist_ok=True)

    # -- blobs ----------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / normalize_digest(digest).replace(":", "-")

    def full(self) -> StoreFull:
        return StoreFull(f"no space left in the model store {self.root}; nothing was kept")

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
        os.replace(partial, self.blob_path(actual))
        return actual

    def write_blob(self, chunks: Iterable[bytes], expected: str | None = None) -> tuple[str, int]:
        """Stream bytes into a new blob, verified against ``expected`` if given."""
        fd, tmp = tempfile.mkstemp(dir=self.partial, prefix="upload-", suffix=".partial")
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as f:
                for block in chunks:
                    digest.update(block)
                    f.write(block)
                    size += len(block)
                f.flush()
                os.fsync(f.fileno())
            actual = f"sha256:{digest.hexdigest()}"
            if expected is not None and actual != normalize_digest(expected):
                raise DigestMismatch(f"digest mismatch: expected {expected}, got {actual}")
            os.replace(tmp, self.blob_path(actual))
            return actual, size
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise self.full() from None
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def write_bytes(self, data: bytes) -> tuple[str, int]:
        return self.write_blob([data])

    def read_bytes(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    # -- manifests ------------------------------------------------------------------------
    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests.joinpath(*name.parts)

    def get(self, name: ModelName) -> StoredModel:
        path = self.manifest_path(name)
        try:
            data, mtime = path.read_bytes(), path.stat().st_mtime
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ModelNotFound(name.display) from None
        return StoredModel(name, Manifest.from_bytes(data), mtime)

    def exists(self, name: ModelName) -> bool:
        return self.manifest_path(name).is_file()

    def put(self, name: ModelName, manifest: Manifest) -> None:
        missing = [d for d in manifest.digests() if not self.has_blob(d)]
        if missing:
            raise BadRequest(f"manifest refers to missing blobs: {', '.join(missing)}")
        _fsync_write(self.manifest_path(name), manifest.to_bytes())

    def delete(self, name: ModelName) -> None:
        path = self.manifest_path(name)
        if not path.is_file():
            raise ModelNotFound(name.display)
        path.unlink()
        for parent in path.parents:
            if parent == self.manifests:
                break
            with contextlib.suppress(OSError):
                parent.rmdir()
        self.prune()

    def list(self) -> Iterator[StoredModel]:
        for path in sorted(self.manifests.glob("*/*/*/*")):
            if not path.is_file() or path.name.startswith(".tmp-"):
                continue
            try:
                name = ModelName.parse(f"{path.parts[-4]}/{path.parts[-3]}/{path.parts[-2]}:{path.parts[-1]}")
                yield StoredModel(name, Manifest.from_bytes(path.read_bytes()), path.stat().st_mtime)
            except (ValueError, OSError):
                continue  # a foreign or corrupt file is not a model

    def discard(self, digests: Iterable[str]) -> None:
        """Remove these blobs unless a manifest refers to them."""
        used = {d for m in self.list() for d in m.manifest.digests()}
        for digest in set(digests) - used:
            self.blob_path(digest).unlink(missing_ok=True)

    def prune(self) -> None:
        """Remove blobs no manifest refers to."""
        used = {d for m in self.list() for d in m.manifest.digests()}
        for blob in self.blobs.glob("sha256-*"):
            if blob.name.replace("-", ":", 1) not in used:
                blob.unlink(missing_ok=True)
