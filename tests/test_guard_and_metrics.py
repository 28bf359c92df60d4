"""Origins, API keys, request ids and metrics, over real HTTP."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from conftest import Host, free_port, serve_command, start_host


def test_unlisted_browser_origins_are_refused_and_local_ones_get_cors(host: Host) -> None:
    body = {"model": "tiny", "prompt": "x", "stream": False, "options": {"num_predict": 1}}
    with host.client() as c:
        evil = c.post("/api/generate", json=body, headers={"Origin": "https://evil.example"})
        assert evil.status_code == 403 and "not allowed" in evil.json()["error"]
        assert "access-control-allow-origin" not in evil.headers
        # nothing ran for the refused origin
        assert c.get("/api/ps").json()["models"] == []
        local = c.post("/api/generate", json=body, headers={"Origin": "http://localhost:5173"})
        assert local.status_code == 200
        assert local.headers["access-control-allow-origin"] == "http://localhost:5173"
        pre = c.options(
            "/api/chat", headers={"Origin": "http://127.0.0.1:8080", "Access-Control-Request-Method": "POST"}
        )
        assert pre.status_code == 204 and "POST" in pre.headers["access-control-allow-methods"]
        assert "Authorization" in pre.headers["access-control-allow-headers"]
        no_origin = c.get("/api/tags")  # curl, SDKs: no Origin header, not a browser
        assert no_origin.status_code == 200
        # the apps Ollama allows by default: Electron, Tauri, VS Code webviews, local files, 0.0.0.0
        for app in (
            "app://obsidian.md",
            "tauri://localhost",
            "vscode-webview://abc",
            "file://",
            "http://0.0.0.0:3000",
        ):
            assert c.get("/api/tags", headers={"Origin": app}).status_code == 200, app
        assert c.get("/api/tags", headers={"Origin": "https://app.evil.example"}).status_code == 403


@pytest.fixture
def locked(tmp_path: Path, tiny_gguf: Path) -> Iterator[Host]:
    for h in start_host(
        tmp_path / "store", api_keys="k1,k2", origins="https://app.example.com,https://*.corp.test"
    ):
        with httpx.Client(base_url=h.url, headers={"Authorization": "Bearer k1"}) as c:
            assert (
                c.post(
                    "/api/pull", json={"model": "tiny", "source": str(tiny_gguf), "stream": False}
                ).status_code
                == 200
            )
        yield h


def test_api_keys_are_required_and_the_official_clients_send_them(locked: Host) -> None:
    with httpx.Client(base_url=locked.url) as c:
        assert c.get("/").status_code == 200 and c.get("/api/version").status_code == 200  # health stays open
        missing = c.get("/api/tags")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert c.get("/api/tags", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert c.get("/api/tags", headers={"Authorization": "Bearer k2"}).status_code == 200
        assert c.get("/api/tags", headers={"X-API-Key": "k2"}).status_code == 200  # Anthropic's header
        assert c.get("/api/tags", headers={"X-API-Key": "nope"}).status_code == 401
        listed = c.get("/api/tags", headers={"Origin": "https://x.corp.test", "Authorization": "Bearer k1"})
        assert (
            listed.status_code == 200
            and listed.headers["access-control-allow-origin"] == "https://x.corp.test"
        )
        assert c.get("/api/tags", headers={"Origin": "https://corp.test.evil.com"}).status_code == 403
    oa = openai.OpenAI(base_url=locked.url + "/v1", api_key="k1", max_retries=0)
    assert [m.id for m in oa.models.list().data] == ["tiny:latest"]
    with pytest.raises(openai.AuthenticationError) as refused:
        openai.OpenAI(base_url=locked.url + "/v1", api_key="bad", max_retries=0).models.list()
    assert refused.value.code == "invalid_api_key" and "API key" in refused.value.message  # OpenAI's shape
    with httpx.Client(base_url=locked.url) as c:  # and Anthropic's on its paths
        anthropic_401 = c.post("/v1/messages", json={}, headers={"X-API-Key": "nope"}).json()
        assert anthropic_401["type"] == "error" and anthropic_401["error"]["type"] == "authentication_error"
        elsewhere = c.post("/v1/messages", json={}, headers={"Origin": "https://evil.example"}).json()
        assert elsewhere["error"]["type"] == "permission_error"
    ol = ollama.Client(host=locked.url, headers={"Authorization": "Bearer k2"})
    assert ol.list().models[0].model == "tiny:latest"


def test_request_ids_and_metrics(host: Host) -> None:
    with host.client() as c:
        mine = c.get("/api/tags", headers={"X-Request-ID": "abc-123"})
        assert mine.headers["x-request-id"] == "abc-123"
        generated = c.get("/api/tags", headers={"X-Request-ID": "bad id with spaces"})
        assert len(generated.headers["x-request-id"]) == 32
        c.post(
            "/api/generate",
            json={"model": "tiny", "prompt": "x", "stream": False, "options": {"num_predict": 3}},
        )
        c.post("/api/generate", json={"model": "ghost", "prompt": "x"})
        text = c.get("/metrics").text
    assert 'ferrousforge_requests_total{method="POST",route="/api/generate",status="200"} 1.0' in text
    assert 'ferrousforge_requests_total{method="POST",route="/api/generate",status="404"} 1.0' in text
    assert 'ferrousforge_tokens_total{kind="generated",model="tiny:latest"} 3.0' in text
    assert "ferrousforge_models_loaded 1.0" in text
    assert "ferrousforge_request_seconds_bucket" in text and "ferrousforge_requests_in_flight 0.0" in text


def test_the_server_logs_each_request_and_each_model_load_and_debug_lines_with_ollama_debug(
    tmp_path: Path, tiny_gguf: Path
) -> None:
    """``ferrousforge serve`` prints, as ``ollama serve`` does, a line per request and per model load
    (the runner's warnings come out the same way); OLLAMA_DEBUG=1 adds the debug lines."""
    import os
    import subprocess

    def serve(**env: str) -> str:
        port = free_port()
        environment = {**os.environ, "FERROUSFORGE_NUM_THREAD": "1", "FERROUSFORGE_REGISTRY": "", **env}
        proc = subprocess.Popen(
            serve_command(port, "--models", str(tmp_path / "store")),
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    httpx.get(url + "/api/version", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            with httpx.Client(base_url=url, timeout=60) as c:
                c.post("/api/pull", json={"model": "tiny", "source": str(tiny_gguf), "stream": False})
                options = {"num_predict": 2, "kv_cache_type": "q8_0"}  # heads of 16: falls back, warns
                r = c.post("/api/generate", json={"model": "tiny", "prompt": "hi", "options": options})
                assert r.status_code == 200
                assert c.get("/api/nope").status_code == 404
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=30)
        return err

    log = serve()
    access = [
        json.loads(line.split(" ferrousforge.access ", 1)[1])
        for line in log.splitlines()
        if " ferrousforge.access " in line
    ]
    assert {"method": "GET", "path": "/api/nope", "status": 404} in [
        {k: a[k] for k in ("method", "path", "status")} for a in access
    ]
    assert re.search(r"INFO ferrousforge loaded tiny:latest: llama\.cpp on cpu, \d+ ms, runner pid \d+", log)
    assert "WARNING ferrousforge tiny:latest: a q8_0 KV cache holds whole blocks of 32 values" in log
    assert " DEBUG " not in log
    debug = serve(OLLAMA_DEBUG="1")
    assert "DEBUG ferrousforge tiny:latest: options {'num_predict': 2" in debug
