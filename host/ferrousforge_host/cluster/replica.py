"""A model replica: today's host app (scheduler, engines, every capability route) in one Ray actor.

The ingress hands it requests for one model at a time, with Serve's multiplexed model id set to the
model's name: the replica takes the model on through ``serve.multiplexed`` (so Serve sends that
model's next requests here, and when the replica holds more than ``max_models_per_replica`` the least
recently used one is unloaded), brings its node store in step, and runs the request through the
host's own ASGI app. It tells the ingress what it holds every ``report_s``, and at once when a
model came or went.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import ray
from prometheus_client import generate_latest
from ray import serve
from ray.serve.handle import DeploymentResponseGenerator
from starlette.requests import Request

from ferrousforge.errors import ForgeError
from ferrousforge.names import ModelName
from ferrousforge_host.app import create_app, forge_error
from ferrousforge_host.cluster.bridge import Call, Head, run_asgi
from ferrousforge_host.cluster.config import ClusterConfig
from ferrousforge_host.cluster.node_store import NodeStore
from ferrousforge_host.config import Settings

log = logging.getLogger("ferrousforge.cluster")
REPLICA_HEADER = b"x-ferrousforge-replica"


class ModelReplica:
    def __init__(self, settings: Settings, config: ClusterConfig) -> None:
        context = serve.get_replica_context()
        self.id = context.replica_id.unique_id
        self.config = config
        shared = not config.node_models
        if not shared:  # a node store of its own; the Ollama store is read by the ingress only
            folder = Path(os.path.expanduser(config.node_models.format(replica=self.id)))
            settings = replace(settings, models=folder, ollama_models="")
        if not settings.num_thread:  # its models' threads: the CPUs Ray gave the replica, not the node's
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0)
            settings = replace(settings, num_thread=max(1, int(cpus)))
        self.app = create_app(settings)
        self.ingress = serve.get_deployment_handle("Ingress", app_name=context.app_name)
        self.node = NodeStore(self.app.state.store, self._fetch, shared)
        self.node_id = ray.get_runtime_context().get_node_id()
        self.fresh: set[str] = set()  # models taken on and not yet verified on this node

        async def take(model_id: str) -> Any:  # a function of its own: Serve keeps its cache on it
            return await self._take(model_id)

        self.hold = serve.multiplexed(max_num_models_per_replica=config.max_models_per_replica)(take)
        self._wake = asyncio.Event()
        self._reporter: asyncio.Future[None] | None = None
        self._reported: tuple[object, ...] = ()

    # -- serving ----------------------------------------------------------------------------
    async def call(self, call: Call, manifest: bytes | None) -> AsyncIterator[Head | bytes]:
        """Run one HTTP request; yields its head (with the body's first part), then the rest."""
        async for item in self._run(call, manifest, self.config.stream_interval_ms / 1000):
            yield item

    async def call_whole(self, call: Call, manifest: bytes | None) -> Head:
        """Run one HTTP request whose answer is not streamed: one message back, the head with the
        whole body (a unary call costs less than a stream of one item)."""
        head: Head | None = None
        body = bytearray()
        async for item in self._run(call, manifest, interval=3600.0):
            if isinstance(item, Head):
                head = item
                body += item.body
            else:
                body += item
        assert head is not None
        head.body, head.done = bytes(body), True
        return head

    async def _run(self, call: Call, manifest: bytes | None, interval: float) -> AsyncIterator[Head | bytes]:
        self._start_reporting()
        model_id = serve.get_multiplexed_model_id()
        try:
            if model_id:
                await self.hold(model_id)
                await self._sync(ModelName.parse(model_id), manifest)
        except ForgeError as exc:  # the node could not get the model: answered in the path's dialect
            scope = {"type": "http", "method": call.method, "path": call.path, "headers": []}
            async for item in run_asgi(await forge_error(Request(scope), exc), call):
                yield self._mark(item)
            return
        try:
            # closed with this generator: a client that went away cancels the request
            async with contextlib.aclosing(run_asgi(self.app, call, interval)) as items:
                async for item in items:
                    yield self._mark(item)
        finally:
            if self._state() != self._reported:  # a model came or went: tell the ingress now
                self._wake.set()

    def _state(self) -> tuple[object, ...]:
        loaded = tuple(r.name.display for r in self.app.state.scheduler.loaded())
        return loaded, len(self.node.fetched)

    def _mark(self, item: Head | bytes) -> Head | bytes:
        if isinstance(item, Head):
            item.headers.append((REPLICA_HEADER, self.id.encode()))
        return item

    async def _take(self, model_id: str) -> Any:
        """Serve's multiplexed loader: called when a model comes to this replica (again)."""
        self.fresh.add(model_id)
        name = ModelName.parse(model_id)
        held = _Held()

        async def unload() -> None:  # Serve drops it (least recently used): free its memory
            await self.app.state.scheduler.unload(name)

        held.__dict__["__del__"] = unload  # Serve awaits a coroutine __del__ (the GC never calls it)
        return held

    async def _sync(self, name: ModelName, manifest: bytes | None) -> None:
        if manifest is None:
            await self._forget(name)
            return
        verify = name.display in self.fresh
        await self.node.sync(name, manifest, verify)
        self.fresh.discard(name.display)

    async def _forget(self, name: ModelName) -> None:
        """The cluster no longer has it: unload it and drop it from the node store."""
        if not self.node.shared and self.node.store.manifest_path(name).is_file():
            await self.app.state.models.delete(name)

    async def _fetch(self, digest: str) -> AsyncIterator[bytes]:
        chunks = cast(DeploymentResponseGenerator, self.ingress.options(stream=True).blob.remote(digest))
        async for chunk in chunks:
            yield chunk

    # -- reporting --------------------------------------------------------------------------
    def _start_reporting(self) -> None:
        if self._reporter is None or self._reporter.done():
            self._reporter = asyncio.ensure_future(self._report_loop())

    async def _report_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.report()
            except Exception as exc:  # the ingress restarting: try again next round
                log.debug("report to the ingress failed: %s", exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.report_s)

    def snapshot(self) -> dict[str, Any]:
        return {
            "replica": self.id,
            "node": self.node_id,
            "pid": os.getpid(),
            "models": self.app.state.models.ps()["models"],
            "stored": self.node.names(),
            "fetched": list(self.node.fetched),
            "metrics": generate_latest(self.app.state.metrics.registry).decode(),
        }

    async def report(self) -> None:
        sent = time.time()
        self._reported = self._state()
        known: list[str] = await self.ingress.report.remote(self.snapshot())
        if self.node.shared:
            return
        for model in self.node.store.list():  # deleted in the cluster since: drop it here too
            if model.name.display not in known and model.modified_at < sent:
                await self._forget(model.name)

    # -- life -------------------------------------------------------------------------------
    async def check_health(self) -> None:
        self._start_reporting()
        if not self.node.store.root.is_dir():
            raise RuntimeError(f"the node store {self.node.store.root} is gone")

    async def __del__(self) -> None:  # Serve's graceful shutdown, after in-flight requests drained
        if self._reporter:
            self._reporter.cancel()
        await self.app.state.scheduler.shutdown()


class _Held:
    """What ``serve.multiplexed`` caches per model: only its unload hook matters."""
