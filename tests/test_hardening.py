"""Bad input on every endpoint, and a bounded load test on 127.0.0.1.

The battery sends malformed JSON, wrong types, huge values, unknown fields, unicode edge cases and
path-traversal names to every route the app has: no answer may be a 5xx, and the server stays
healthy. The load test sends 400 requests from 200 concurrent clients: every answer is a 200 or a
503 (admission control), and the host's memory returns to its baseline."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
from starlette.routing import Mount, Route
from test_crash_and_disk import spawn_host

from conftest import Host, free_port

BODIES: list[bytes] = [
    b"",
    b"{",
    b"[]",
    b"null",
    b'"just a string"',
    b"\xff\xfe not utf-8",
    json.dumps({"model": 123}).encode(),
    json.dumps({"model": ["tiny"]}).encode(),
    json.dumps({"model": "../../../etc/passwd"}).encode(),
    json.dumps({"model": "tiny/../../x"}).encode(),
    json.dumps({"model": "a" * 100_000}).encode(),
    json.dumps({"model": "\u0000\u202e\ufeff"}).encode(),
    b'{"model": "\\ud800"}',  # a lone surrogate
    json.dumps({"model": "tiny", "options": {"num_predict": 10**30}}).encode(),
    json.dumps({"model": "tiny", "options": {"temperature": "hot"}}).encode(),
    json.dumps({"model": "tiny", "options": {"no_such_option": 1}}).encode(),
    json.dumps({"model": "tiny", "prompt": 5, "messages": "no", "input": {"x": 1}}).encode(),
    json.dumps({"model": "tiny", "keep_alive": "forever and ever"}).encode(),
    json.dumps({"model": "tiny", "format": {"type": "bogus-type"}, "stream": "yes"}).encode(),
    json.dumps({"model": "tiny", "messages": [{"role": "wizard", "content": 1}]}).encode(),
    json.dumps({"model": "tiny", "input": [[-1, 2**40]], "documents": [None], "query": 7}).encode(),
    json.dumps({"source": "/etc/passwd", "model": "evil"}).encode(),
    json.dumps({"model": "x", "files": {"../../x.gguf": "sha256:" + "0" * 64}}).encode(),
    json.dumps({"model": "x", "from": "../../../etc", "modelfile": "FROM /etc/shadow"}).encode(),
    json.dumps({"source": "tiny", "destination": "../../escape"}).encode(),
    json.dumps({"model": "tiny", "unknown_field": {"deep": [1, 2, {"x": None}]}}).encode(),
    json.dumps({"x": "💥" * 1000, "model": "tiny\n\t"}).encode(),
]
PATH_VALUES = {
    "digest": ["sha256:../../etc/passwd", "sha256:" + "g" * 64, "..%2F..%2Fx"],
    "model": ["../x", "%00"],
}
SPARED = {"/api/delete"}  # (a valid name is never sent, but keep deletes out of the loop anyway)


def routes(app: object) -> list[tuple[str, str]]:
    out = []
    for route in getattr(app, "routes", []):
        if isinstance(route, Mount):
            out += [
                ("GET", route.path + "/../../pyproject.toml"),
                ("GET", route.path + "/%2e%2e/%2e%2e/etc/passwd"),
            ]
            continue
        if not isinstance(route, Route) or route.path in SPARED:
            continue
        for method in sorted(route.methods or {"GET"}):
            if method == "HEAD":
                continue
            paths = [route.path]
            for name, values in PATH_VALUES.items():
                if "{" + name in route.path:
                    paths = [route.path.split("{")[0] + v for v in values]
            if "{" in route.path and paths == [route.path]:
                paths = [route.path.split("{")[0] + "..%2F..%2Fx"]
            out += [(method, p) for p in paths]
    return out


def test_bad_input_on_every_endpoint_never_gives_a_5xx(host: Host) -> None:
    found = routes(host.app)
    assert len(found) > 30
    failures = []
    with host.client(timeout=30) as c:
        for method, path in found:
            for body in BODIES if method in ("POST", "DELETE") else [b""]:
                r = c.request(method, path, content=body, headers={"Content-Type": "application/json"})
                if r.status_code >= 500:
                    failures.append((method, path, body[:60], r.status_code, r.text[:200]))
                elif r.status_code >= 400:
                    assert "error" in r.json(), (method, path, r.text)
        assert c.get("/api/version").status_code == 200
        ok = c.post(
            "/api/generate",
            json={"model": "tiny", "prompt": "a", "stream": False, "options": {"num_predict": 2}},
        )
        assert ok.status_code == 200
        assert [m["name"] for m in c.get("/api/tags").json()["models"]] == ["tiny:latest"]
    assert failures == []
    assert not (host.store_root.parent / "escape").exists()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_200_concurrent_clients_get_answers_or_503_and_memory_returns(
    tmp_path: Path, tiny_gguf: Path
) -> None:
    store, port = tmp_path / "store", free_port()
    proc = spawn_host(store, port, max_queue="64", keep_alive="1h")
    url = f"http://127.0.0.1:{port}"
    try:
        pulled = httpx.post(
            f"{url}/api/pull", json={"model": "tiny", "source": str(tiny_gguf), "stream": False}, timeout=60
        )
        assert pulled.status_code == 200, pulled.text
        body = {"model": "tiny", "prompt": "hello", "stream": False, "options": {"num_predict": 4, "seed": 1}}

        async def load(total: int, clients: int) -> list[int]:
            # a connection per request: a pooled one the server has just closed would fail on the
            # client's side (a race in the pool), which is not what this measures
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
                sem = asyncio.Semaphore(clients)

                async def one() -> int:
                    async with sem:
                        return (await c.post("/api/generate", json=body)).status_code

                return await asyncio.gather(*(one() for _ in range(total)))

        asyncio.run(load(20, 4))  # warm: model loaded, caches filled
        baseline = rss_kb(proc.pid)
        codes = asyncio.run(load(400, 200))
        assert set(codes) <= {200, 503}, sorted(set(codes))
        assert codes.count(200) >= 64
        asyncio.run(load(20, 4))
        after = rss_kb(proc.pid)
        assert after < baseline * 1.25 + 20_000, (baseline, after)
        assert httpx.get(f"{url}/api/version").status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)
