"""Store faults with real processes and files: a host killed with SIGKILL in the middle of a pull or
an upload, a corrupted blob already in the store, and a disk that fills up during a pull."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ferrousforge.manifest import Manifest

from conftest import free_port, serve_command, start_host
from fileserver import serve_files


def spawn_host(store: Path, port: int, **settings: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FERROUSFORGE_NUM_THREAD": "1"}
    env.update({f"FERROUSFORGE_{k.upper()}": v for k, v in settings.items()})
    cmd = serve_command(port, "--models", str(store))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/version", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("host did not start")


def assert_consistent(store: Path) -> None:
    """Every manifest's blobs exist and match their names; no blob is a half-written file."""
    for blob in (store / "blobs").iterdir():
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name.replace("-", ":", 1)
    for path in (store / "manifests").rglob("*"):
        if path.is_file():
            manifest = Manifest.from_bytes(path.read_bytes())
            for digest in manifest.digests():
                assert (store / "blobs" / digest.replace(":", "-")).is_file()


@pytest.fixture
def big_model(tiny_gguf: Path) -> bytes:
    """The tiny model with 3 MiB of padding after its tensors: big enough to interrupt, still loads."""
    return tiny_gguf.read_bytes() + bytes(3 << 20)


def test_kill_9_during_a_pull_leaves_the_store_consistent_and_the_pull_resumes(
    tmp_path: Path, big_model: bytes
) -> None:
    store, port = tmp_path / "store", free_port()
    with serve_files({"m.gguf": big_model}) as fs:
        fs.trickle = 0.02  # ~3 MB/s: the pull is still running when the host dies
        proc = spawn_host(store, port)
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.stream(
                "POST", f"{url}/api/pull", json={"model": "m", "source": f"{fs.url}/m.gguf"}, timeout=30
            ) as r:
                for line in r.iter_lines():
                    if '"completed"' in line and '"completed": 0' not in line and '"completed":0' not in line:
                        break
            time.sleep(0.3)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            proc.kill()
        assert not (store / "manifests").exists() or not any(
            p.is_file() for p in (store / "manifests").rglob("*")
        )
        assert_consistent(store)
        partials = list((store / "partial").iterdir())
        assert partials and 0 < partials[0].stat().st_size < len(big_model)
        fs.trickle = 0.0
        fs.requests.clear()
        proc = spawn_host(store, port)
        try:
            r = httpx.post(
                f"{url}/api/pull",
                json={"model": "m", "source": f"{fs.url}/m.gguf", "stream": False},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            assert any(
                rng and rng.startswith("bytes=") for _, _, rng in fs.requests
            )  # resumed, not restarted
            gen = httpx.post(
                f"{url}/api/generate",
                json={"model": "m", "prompt": "a", "stream": False, "options": {"num_predict": 2}},
                timeout=60,
            )
            assert gen.status_code == 200
        finally:
            proc.terminate()
            proc.wait(20)
    assert_consistent(store)
    assert list((store / "partial").iterdir()) == []


def test_kill_9_during_a_blob_upload_and_create_leaves_nothing_half_written(
    tmp_path: Path, big_model: bytes
) -> None:
    store, port = tmp_path / "store", free_port()
    digest = "sha256:" + hashlib.sha256(big_model).hexdigest()
    proc = spawn_host(store, port)
    url = f"http://127.0.0.1:{port}"

    def slow_body() -> Iterator[bytes]:
        for at in range(0, len(big_model), 1 << 16):
            yield big_model[at : at + (1 << 16)]
            if at > len(big_model) // 2:
                proc.send_signal(signal.SIGKILL)  # the host dies with half the upload written
                time.sleep(0.5)

    try:
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{url}/api/blobs/{digest}", content=slow_body(), timeout=30)
        proc.wait(10)
    finally:
        proc.kill()
    assert_consistent(store)
    assert not (store / "blobs" / digest.replace(":", "-")).exists()
    proc = spawn_host(store, port)
    try:
        assert httpx.head(f"{url}/api/blobs/{digest}").status_code == 404
        assert httpx.post(f"{url}/api/blobs/{digest}", content=big_model, timeout=30).status_code == 201
        r = httpx.post(
            f"{url}/api/create",
            json={"model": "made", "files": {"m.gguf": digest}, "stream": False},
            timeout=60,
        )
        assert r.status_code == 200, r.text
    finally:
        proc.terminate()
        proc.wait(20)
    assert_consistent(store)


def test_a_corrupted_blob_is_never_reused_but_fetched_again(
    tmp_path: Path, big_model: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_files({"acme/r/m.gguf": big_model}) as fs:
        monkeypatch.setenv("HF_ENDPOINT", fs.url)
        for h in start_host(tmp_path / "store"):
            with h.client() as c:
                assert c.post("/api/pull", json={"model": "hf.co/acme/r", "stream": False}).status_code == 200
                blob = h.store_root / "blobs" / ("sha256-" + hashlib.sha256(big_model).hexdigest())
                data = bytearray(blob.read_bytes())
                data[len(data) // 2] ^= 0xFF  # bit rot
                blob.write_bytes(bytes(data))
                fs.requests.clear()
                r = c.post("/api/pull", json={"model": "hf.co/acme/r", "stream": False})
                assert r.status_code == 200, r.text
                assert any(method == "GET" and "m.gguf" in path for method, path, _ in fs.requests)
                assert blob.read_bytes() == big_model
                assert_consistent(h.store_root)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs; needs root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_during_a_pull_is_reported_and_cleaned(small_disk: Path, big_model: bytes) -> None:
    assert len(big_model) > 1 << 20
    with serve_files({"m.gguf": big_model}) as fs:
        for h in start_host(small_disk / "store"):
            with h.client() as c:
                r = c.post("/api/pull", json={"model": "m", "source": f"{fs.url}/m.gguf", "stream": False})
                assert r.status_code == 507 and "no space left" in r.json()["error"]
                assert list((small_disk / "store" / "partial").iterdir()) == []
                assert list((small_disk / "store" / "blobs").iterdir()) == []
                up = c.post("/api/blobs/sha256:" + hashlib.sha256(big_model).hexdigest(), content=big_model)
                assert up.status_code == 507
                assert c.get("/api/tags").json()["models"] == []
                assert c.get("/api/version").status_code == 200
            # the CLI's create uploads a file the store has no room for: it says so (the server reads
            # the rest of the upload before answering), not "could not connect"
            source = small_disk.parent / "big.gguf"
            source.write_bytes(big_model)
            (small_disk.parent / "Modelfile").write_text(f"FROM {source}\n")
            made = subprocess.run(
                [sys.executable, "-m", "ferrousforge_host.cli", "create", "big", "-f", "Modelfile"],
                cwd=small_disk.parent,
                capture_output=True,
                text=True,
                env={**os.environ, "FERROUSFORGE_HOST": h.url},
                timeout=120,
            )
            assert made.returncode != 0 and "no space left in the model store" in made.stderr, made.stderr
            # cp with the disk full to the last byte: 507, nothing half-written
            with h.client() as c:
                tiny = small_disk.parent / "tiny.gguf"
                tiny.write_bytes(big_model[: -(3 << 20)])
                r = c.post("/api/pull", json={"model": "tiny", "source": str(tiny), "stream": False})
                assert r.status_code == 200, r.text
                with contextlib.suppress(OSError), (small_disk / "filler").open("wb") as filler:
                    while True:
                        filler.write(bytes(4096))
                        filler.flush()
                r = c.post("/api/copy", json={"source": "tiny", "destination": "copy"})
                assert r.status_code == 507 and "no space left" in r.json()["error"], r.text
                assert [m["name"] for m in c.get("/api/tags").json()["models"]] == ["tiny:latest"]


def test_runners_end_when_their_server_is_killed(tmp_path: Path, tiny_gguf: Path) -> None:
    """A server killed outright (no chance to end its runners) leaves no runner behind: each sees its
    socket close, or (busy in a long call) that its parent is gone."""
    port = free_port()
    proc = spawn_host(tmp_path / "store", port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            r = c.post("/api/pull", json={"model": "tiny", "source": str(tiny_gguf), "stream": False})
            assert r.status_code == 200, r.text
            c.post("/api/generate", json={"model": "tiny", "prompt": "x", "options": {"num_predict": 1}})
            runner = int(c.get("/api/info").json()["models"][0]["runner_pid"])
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and Path(f"/proc/{runner}").exists():
        time.sleep(0.1)
    assert not Path(f"/proc/{runner}").exists() or "Z" in Path(f"/proc/{runner}/stat").read_text().split()[2]
