"""Loads models on first use, keeps them for keep_alive, and unloads them when they expire.

Requests to one model run one at a time, in arrival order (its Mold's single worker); different
models run side by side. A request whose load-time options (num_ctx, num_batch, num_thread) differ
from the loaded instance reloads the model, as Ollama does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from ferrousforge.embedding import BatchedMold
from ferrousforge.errors import ForgeError
from ferrousforge.manifest import PARAMS, SYSTEM, TEMPLATE, Manifest
from ferrousforge.mold import ModelSpec, Mold, resolve_mold
from ferrousforge.names import ModelName
from ferrousforge.options import Options
from ferrousforge_host.store import BlobStore


@dataclass
class Runner:
    name: ModelName
    digest: str
    mold: Mold
    load_key: tuple[int, ...]
    active: int = 0
    keep_alive: float | None = 300.0
    expires_at: float | None = None  # wall-clock seconds; None while busy or kept forever
    timer: asyncio.TimerHandle | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)


class Scheduler:
    def __init__(
        self, store: BlobStore, keep_alive: float | None, base: Options, batching: bool = True
    ) -> None:
        self.store = store
        self.batching = batching
        self.default_keep_alive = keep_alive
        self.base = base
        self.runners: dict[ModelName, Runner] = {}
        self._locks: dict[ModelName, asyncio.Lock] = {}

    def spec(self, name: ModelName) -> tuple[ModelSpec, Manifest]:
        """Everything the store knows about a model, ready for a Mold."""
        stored = self.store.get(name)
        manifest = stored.manifest
        layer = manifest.model_layer
        if layer is None:
            raise ForgeError(f"model '{name}' has no model layer")
        try:
            config: dict[str, Any] = json.loads(self.store.read_bytes(manifest.config.digest))
        except (OSError, ValueError) as exc:
            raise ForgeError(f"model '{name}' has an unreadable config: {exc}") from exc

        def text(media_type: str) -> str | None:
            found = manifest.layer(media_type)
            return self.store.read_bytes(found.digest).decode() if found else None

        params = json.loads(text(PARAMS) or "{}")
        spec = ModelSpec(
            name=name.display,
            format=config.get("model_format", "gguf"),
            path=str(self.store.blob_path(layer.digest)),
            config=config,
            template=text(TEMPLATE),
            system=text(SYSTEM),
            parameters=params,
            files={x.name: str(self.store.blob_path(x.digest)) for x in manifest.layers if x.name},
        )
        return spec, manifest

    def options(self, spec: ModelSpec, request_options: dict[str, Any] | None) -> Options:
        return Options.parse(request_options, Options.parse(spec.parameters, self.base))

    @asynccontextmanager
    async def use(
        self, name: ModelName, options: Options, keep_alive: float | None
    ) -> AsyncIterator[tuple[Runner, int]]:
        """Hold a loaded model for one request; yields it and the load time in ns (0 if warm)."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        load_ns = 0
        async with lock:
            spec, manifest = self.spec(name)
            digest = manifest.model_layer.digest if manifest.model_layer else ""
            runner = self.runners.get(name)
            if runner and (runner.digest != digest or runner.load_key != options.load_key()):
                await self._wait_idle(runner)
                await self._unload(runner)
                runner = None
            if runner is None:
                started = time.perf_counter_ns()
                mold = resolve_mold(spec)(spec, options)
                if isinstance(mold, BatchedMold):
                    mold.batching = self.batching
                await mold.load()
                load_ns = time.perf_counter_ns() - started
                runner = Runner(name, digest, mold, options.load_key())
                self.runners[name] = runner
            runner.active += 1
            runner.idle.clear()
            if runner.timer:
                runner.timer.cancel()
                runner.timer = None
            runner.keep_alive = keep_alive
        try:
            yield runner, load_ns
        finally:
            runner.active -= 1
            if runner.active == 0:
                runner.idle.set()
                self._arm(runner)

    def _arm(self, runner: Runner) -> None:
        if runner.keep_alive is None:
            runner.expires_at = None
            return
        runner.expires_at = time.time() + runner.keep_alive
        loop = asyncio.get_running_loop()
        runner.timer = loop.call_later(runner.keep_alive, lambda: asyncio.ensure_future(self._expire(runner)))

    async def _expire(self, runner: Runner) -> None:
        async with self._locks.setdefault(runner.name, asyncio.Lock()):
            if runner.active == 0 and self.runners.get(runner.name) is runner:
                await self._unload(runner)

    async def _wait_idle(self, runner: Runner) -> None:
        while runner.active:
            await runner.idle.wait()

    async def _unload(self, runner: Runner) -> None:
        if runner.timer:
            runner.timer.cancel()
        if self.runners.get(runner.name) is runner:
            del self.runners[runner.name]
        await runner.mold.unload()

    async def unload(self, name: ModelName) -> bool:
        async with self._locks.setdefault(name, asyncio.Lock()):
            runner = self.runners.get(name)
            if runner is None:
                return False
            await self._wait_idle(runner)
            await self._unload(runner)
            return True

    async def shutdown(self) -> None:
        for runner in list(self.runners.values()):
            await self._unload(runner)

    def loaded(self) -> list[Runner]:
        return sorted(self.runners.values(), key=lambda r: r.name.display)
