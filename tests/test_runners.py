"""Runner processes: a native engine that dies (a signal mid-stream, the OOM killer) takes only its own
requests with it; the server, the other models and the next request to the same model go on."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ferrousforge.names import ModelName
from ferrousforge_host.runner import exit_cause

from conftest import Host, runner_pid, start_host
from test_embeddings import tiny_bert

LONG = {"num_predict": 1500, "temperature": 0.8}


@pytest.fixture
def two_models(tmp_path: Path, tiny_gguf: Path, tiny_gguf_plain: Path) -> Iterator[Host]:
    for h in start_host(tmp_path / "store"):
        h.pull_file("tiny", tiny_gguf)
        h.pull_file("other", tiny_gguf_plain)
        yield h


def generate(c: httpx.Client, model: str, **options: object) -> httpx.Response:
    body = {"model": model, "prompt": "the cat", "stream": False, "options": {"num_predict": 8, **options}}
    return c.post("/api/generate", json=body)


def test_exit_causes_read_as_ollama_words_them() -> None:
    assert exit_cause(-signal.SIGILL) == "signal: illegal instruction"
    assert exit_cause(-signal.SIGKILL) == "signal: killed"
    assert exit_cause(-signal.SIGSEGV) == "signal: segmentation fault"
    assert exit_cause(-signal.SIGABRT) == "signal: aborted"
    assert exit_cause(3) == "exit status 3"


def test_each_model_runs_in_a_process_of_its_own(two_models: Host) -> None:
    with two_models.client() as c:
        assert generate(c, "tiny").status_code == 200
        assert generate(c, "other").status_code == 200
    pids = {runner_pid(two_models, "tiny"), runner_pid(two_models, "other")}
    assert len(pids) == 2 and os.getpid() not in pids
    for pid in pids:
        os.kill(pid, 0)  # alive


@pytest.mark.parametrize(
    ("sig", "words"), [(signal.SIGILL, "illegal instruction"), (signal.SIGKILL, "killed")]
)
def test_a_runner_killed_mid_stream_ends_that_stream_only(two_models: Host, sig: int, words: str) -> None:
    with two_models.client() as c:
        assert generate(c, "other").status_code == 200
        other_pid = runner_pid(two_models, "other")
        lines: list[dict[str, object]] = []
        with c.stream("POST", "/api/generate", json={"model": "tiny", "prompt": "the", "options": LONG}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                lines.append(json.loads(line))
                if len(lines) == 3:
                    os.kill(runner_pid(two_models, "tiny"), sig)
        assert len(lines) > 3 and all(not x.get("done") for x in lines)
        assert lines[-1] == {"error": f"llama.cpp runner process has terminated: signal: {words}"}
        assert c.get("/api/version").status_code == 200
        assert generate(c, "other").status_code == 200
        assert runner_pid(two_models, "other") == other_pid  # untouched
        again = generate(c, "tiny")
        assert again.status_code == 200 and again.json()["eval_count"] == 8  # loaded afresh


def test_a_dead_runner_answers_500_to_a_waiting_request(two_models: Host) -> None:
    with two_models.client() as c:
        assert generate(c, "tiny").status_code == 200
        runner = two_models.app.state.scheduler.runners[ModelName.parse("tiny")]  # type: ignore[attr-defined]
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(generate, c, "tiny", **LONG)
            deadline = time.monotonic() + 10
            while not runner.active and time.monotonic() < deadline:
                time.sleep(0.001)
            os.kill(runner.mold.runner.pid, signal.SIGABRT)
            r = waiting.result()
        assert r.status_code == 500
        assert r.json() == {"error": "llama.cpp runner process has terminated: signal: aborted"}
        assert generate(c, "tiny").status_code == 200


def test_a_runner_that_dies_idle_is_let_go_and_logged(
    two_models: Host, caplog: pytest.LogCaptureFixture
) -> None:
    """ps, info and /metrics stop counting a model whose runner ended between requests, and the
    server's log says it ended and how."""
    with two_models.client() as c:
        assert generate(c, "tiny").status_code == 200
        assert generate(c, "other").status_code == 200
        pid = runner_pid(two_models, "tiny")
        with caplog.at_level("INFO", logger="ferrousforge"):
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while "runner (pid" not in caplog.text and time.monotonic() < deadline:
                time.sleep(0.02)
            assert [m["name"] for m in c.get("/api/ps").json()["models"]] == ["other:latest"]
        assert f"tiny:latest: its runner (pid {pid}) ended: signal: killed" in caplog.text
        assert "unloaded tiny:latest (its engine had ended)" in caplog.text
        assert [m["name"] for m in c.get("/api/info").json()["models"]] == ["other:latest"]
        assert "ferrousforge_models_loaded 1.0" in c.get("/metrics").text
        assert generate(c, "tiny").status_code == 200  # loaded afresh


def test_an_embedding_runner_that_dies_is_replaced(tmp_path: Path) -> None:
    folder = tiny_bert(tmp_path / "bert")
    for h in start_host(tmp_path / "store"):
        with h.client() as c:
            r = c.post("/api/pull", json={"model": "bert", "source": str(folder), "stream": False})
            assert r.status_code == 200, r.text
            first = c.post("/api/embed", json={"model": "bert", "input": ["hello world"]})
            assert first.status_code == 200
            runner = h.app.state.scheduler.runners[ModelName.parse("bert")]  # type: ignore[attr-defined]
            maps = Path(f"/proc/{runner.mold.runner.pid}/maps").read_text()
            assert "libonnxruntime" in maps and "libllama" not in maps  # only the engine it hosts
            os.kill(runner.mold.runner.pid, signal.SIGKILL)
            runner.mold.runner.proc.wait(10)  # the OOM killer's work is done before the next request
            again = c.post("/api/embed", json={"model": "bert", "input": ["hello world"]})
            assert again.status_code == 200, again.text
            assert again.json()["embeddings"] == first.json()["embeddings"]


def test_runners_can_be_turned_off(tmp_path: Path, tiny_gguf: Path) -> None:
    for h in start_host(tmp_path / "store", runners=0):
        h.pull_file("tiny", tiny_gguf)
        with h.client() as c:
            assert generate(c, "tiny").status_code == 200
        runner = h.app.state.scheduler.runners[ModelName.parse("tiny")]  # type: ignore[attr-defined]
        assert not hasattr(runner.mold, "runner")


def test_a_load_that_stalls_past_the_load_timeout_fails_and_its_runner_is_killed(
    tmp_path: Path, tiny_gguf: Path
) -> None:
    """As OLLAMA_LOAD_TIMEOUT: a runner stopped (SIGSTOP) while it loads makes the request a 500
    naming the timeout, the runner is killed, and the next request loads the model afresh."""

    def new_runners(known: set[int]) -> list[int]:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in known:
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"ferrousforge_host.runner" in cmdline:
                    found.append(int(entry))
        return found

    for host in start_host(tmp_path / "store", load_timeout="2s"):
        host.pull_file("tiny", tiny_gguf)
        body = {"model": "tiny", "prompt": "hi", "options": {"num_predict": 2}, "stream": False}
        with host.client() as c, ThreadPoolExecutor(1) as pool:
            for _ in range(3):  # the runner must be caught while it loads (it takes ~0.3 s)
                before = set(new_runners(set()))
                answer = pool.submit(c.post, "/api/generate", json=body)
                stopped = []
                while not answer.done() and not stopped:
                    stopped = new_runners(before)
                for pid in stopped:
                    os.kill(pid, signal.SIGSTOP)
                r = answer.result(timeout=30)
                if r.status_code != 200:
                    break
                c.post("/api/generate", json={"model": "tiny", "keep_alive": 0})  # too late: again
            assert r.status_code == 500, r.text
            assert "timed out waiting for 'tiny:latest' to load (2 s;" in r.json()["error"]
            for pid in stopped:  # killed (and reaped): no runner left stopped
                assert not Path(f"/proc/{pid}").exists()
            assert c.post("/api/generate", json=body).status_code == 200
