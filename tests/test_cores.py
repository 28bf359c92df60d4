"""The cores shared by models generating at once: the host counts them in shared memory, each runner
reads the count and takes its share of the threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ferrousforge_host.cores import ENV, Busy

from conftest import runner_pid, start_host


def test_busy_models_are_counted_once_each_and_share_the_threads() -> None:
    busy = Busy()
    assert busy.count() == 0 and busy.share(4) == 4
    with busy.generating("a"), busy.generating("a"):  # two requests to one model: one model busy
        assert busy.count() == 1 and busy.share(4) == 4
        with busy.generating("b"):
            assert busy.count() == 2 and busy.share(4) == 2 and busy.share(1) == 1
        assert busy.count() == 1
    assert busy.count() == 0


def test_a_runner_reads_the_hosts_count() -> None:
    busy = Busy()
    read = [sys.executable, "-c", "from ferrousforge_host.cores import busy; print(busy().count())"]
    with busy.generating("a"), busy.generating("b"):
        out = subprocess.run(
            read, env={**os.environ, ENV: str(busy.fd)}, pass_fds=(busy.fd,), capture_output=True, text=True
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"


def test_runners_are_handed_the_count(tmp_path: Path, tiny_gguf: Path) -> None:
    for host in start_host(tmp_path / "store"):
        host.pull_file("tiny", tiny_gguf)
        with host.client() as c:
            body = {"model": "tiny", "prompt": "the", "stream": False, "options": {"num_predict": 2}}
            assert c.post("/api/generate", json=body).status_code == 200
        pid = runner_pid(host, "tiny")
        environ = dict(
            line.split(b"=", 1)
            for line in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if b"=" in line
        )
        fd = int(environ[ENV.encode()])
        assert os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:ferrousforge-busy")
