"""Loads models on first use, keeps them for keep_alive, and unloads them when they expire.

Native engines run in runner processes (``ferrousforge_host.runner``); a runner that died is let go
as soon as the model is idle (``ps``, ``/metrics`` and loads no longer count it), and the model's next
request loads it afresh.

Requests to one model run one at a time, in arrival order (its Mold's single worker); different
models run side by side. A request whose load-time options (``options.LOAD_OPTIONS``: num_ctx,
num_gpu, engine, ...) differ from the loaded instance reloads the model, as Ollama does.

Names over the same weights (``cp``, or a Modelfile that only sets a SYSTEM, TEMPLATE or sampling
PARAMETERs) share one loaded engine, as Ollama's runners are keyed by file: each name is listed as
loaded and keeps its own keep_alive; the engine is counted once and unloaded with its last name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from ferrousforge.embedding import BatchedMold
from ferrousforge.errors import ForgeError, ModelNotFound, NotSupported, Unavailable
from ferrousforge.manifest import ADAPTER, MESSAGES, PARAMS, PROJECTOR, SYSTEM, TEMPLATE, Manifest
from ferrousforge.mold import ModelSpec, Mold, resolve_mold
from ferrousforge.names import ModelName
from ferrousforge.options import Options
from ferrousforge_host.runner import isolated
from ferrousforge_host.store import BlobStore, runnable_template

log = logging.getLogger("ferrousforge")


@dataclass
class Runner:
    name: ModelName
    digest: str
    mold: Mold
    load_key: tuple[object, ...]
    active: int = 0
    keep_alive: float | None = 300.0
    expires_at: float | None = None  # wall-clock seconds; None while busy or kept forever
    timer: asyncio.TimerHandle | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    size: int = 0  # estimated bytes, counted against the memory budget (once for a shared engine)
    last_used: float = field(default_factory=time.monotonic)
    engine_key: tuple[object, ...] = ()  # what the loaded engine depends on; equal keys share it
    engine: str = "auto"  # options.engine it was loaded with


class Scheduler:
    def __init__(
        self,
        store: BlobStore,
        keep_alive: float | None,
        base: Options,
        batching: bool = True,
        max_memory: int | None = None,
        max_loaded: int = 3,
        max_queue: int = 512,
        runners: bool = True,
        engines: str = "",
        load_timeout: float | None = 300.0,
    ) -> None:
        self.store = store
        self.runners_enabled = runners
        self.engines = parse_engines(engines)
        self.batching = batching
        self.max_memory = max_memory or default_memory_budget()
        self.max_loaded = max_loaded
        self.max_queue = max_queue
        self.in_flight = 0
        self.room_timeout = 60.0  # how long a load waits for busy models to become idle
        self.load_timeout = load_timeout  # how long a load may take (None: no limit)
        self._load_lock = asyncio.Lock()
        self.default_keep_alive = keep_alive
        self.base = base
        self.runners: dict[ModelName, Runner] = {}
        self._locks: dict[ModelName, asyncio.Lock] = {}
        self._specs: dict[ModelName, tuple[Manifest, ModelSpec]] = {}
        self._unloading: set[asyncio.Future[None]] = set()  # models let go after a load that timed out

    def spec(self, name: ModelName) -> tuple[ModelSpec, Manifest]:
        """Everything the store knows about a model, ready for a Mold: made once per manifest (the
        layers it reads are content-addressed, so the same manifest always gives the same spec)."""
        try:
            manifest = self.store.get(name).manifest
        except ModelNotFound:
            raise ModelNotFound.to_run(name.display) from None
        made = self._specs.get(name)
        if made is None or made[0] != manifest:
            made = self._specs[name] = (manifest, self._make_spec(name, manifest))
        return made[1], manifest

    def _make_spec(self, name: ModelName, manifest: Manifest) -> ModelSpec:
        layer = manifest.model_layer
        if layer is None:
            raise ForgeError(f"model '{name}' has no model layer")
        try:
            config = self.store.config(manifest)
        except (OSError, ValueError) as exc:
            raise ForgeError(f"model '{name}' has an unreadable config: {exc}") from exc

        def text(media_type: str) -> str | None:
            found = manifest.layer(media_type)
            return self.store.read_bytes(found.digest).decode() if found else None

        params = json.loads(text(PARAMS) or "{}")
        files = {x.name: str(self.store.blob_path(x.digest)) for x in manifest.layers if x.name}
        if projector := manifest.layer(PROJECTOR):  # a vision model's image encoder
            files["projector"] = str(self.store.blob_path(projector.digest))
        adapters = [x for x in manifest.layers if x.media_type == ADAPTER]  # LoRA adapters, applied in order
        files.update({f"adapter.{i}": str(self.store.blob_path(x.digest)) for i, x in enumerate(adapters)})
        spec = ModelSpec(
            name=name.display,
            format=config.get("model_format", "gguf"),
            path=str(self.store.blob_path(layer.digest)),
            config=config,
            template=runnable_template(text(TEMPLATE), config),
            system=text(SYSTEM),
            parameters=params,
            files=files,
            messages=json.loads(text(MESSAGES) or "[]"),
        )
        return spec

    def options(
        self, spec: ModelSpec, request_options: dict[str, Any] | None, needs: frozenset[str] = frozenset()
    ) -> Options:
        """A request's options over the model's and the server's. Engine "auto" becomes, where it has
        what the request ``needs`` (a grammar, logprobs, ...): the engine already running the model
        under the same load options, else the server's preferred engine, else the automatic choice."""
        log.debug("%s: options %s", spec.name, request_options)
        options = Options.parse(request_options, Options.parse(spec.parameters, self.base))
        if options.engine != "auto":  # asked for by name: what it lacks is the engine's 400 to give
            return options
        loaded = next((r for r in self.runners.values() if r.name.display == spec.name), None)
        if loaded and not type(loaded.mold).lacks & needs:
            kept = replace(options, engine=loaded.engine)
            if kept.load_key() == loaded.load_key:
                return kept
        preferred = self.engines.get(spec.format) or self.engines.get("*")
        if preferred:
            try:  # the server's preference, where that engine runs this model and this request
                if not resolve_mold(spec, preferred).lacks & needs:
                    return replace(options, engine=preferred)
            except NotSupported:
                pass
        if needs and resolve_mold(spec).lacks & needs:  # the automatic choice lacks it: one that has it
            return replace(options, engine=resolve_mold(spec, "auto", needs).engine)
        return options

    @asynccontextmanager
    async def use(
        self, name: ModelName, options: Options, keep_alive: float | None, task: str | None = None
    ) -> AsyncIterator[tuple[Runner, int]]:
        """Hold a loaded model for one request; yields it and the load time in ns (0 if warm). With
        ``task``, the model runs for that task rather than its own (a chat model's embeddings), in a
        runner of its own, named ``name#task``."""
        if self.in_flight >= self.max_queue + self.base.num_parallel:  # those decoding, then the queue
            raise Unavailable(
                f"server busy, please try again: {self.in_flight - self.base.num_parallel} requests "
                "waiting, the most allowed (OLLAMA_MAX_QUEUE or FERROUSFORGE_MAX_QUEUE)",
                1,
            )
        self.in_flight += 1
        try:
            async with self._hold(name, options, keep_alive, task) as held:
                yield held
        finally:
            self.in_flight -= 1

    @asynccontextmanager
    async def _hold(
        self, model: ModelName, options: Options, keep_alive: float | None, task: str | None
    ) -> AsyncIterator[tuple[Runner, int]]:
        name = model if task is None else task_slot(model, task)  # the runner's name
        lock = self._locks.setdefault(name, asyncio.Lock())
        load_ns = 0
        async with lock:
            spec, manifest = self.spec(model)
            if task is not None:
                spec = spec.for_task(task)
            digest = manifest.model_layer.digest if manifest.model_layer else ""
            runner = self.runners.get(name)
            stale = (
                runner
                and (  # the name now means other weights (a create: an adapter, a projector)
                    runner.engine_key[:-2] != weights_key(spec) or runner.load_key != options.load_key()
                )
            )
            if runner and (stale or not runner.mold.is_loaded()):  # changed, or its runner died
                await self._wait_idle(runner)
                await self._unload(runner)
                runner = None
            if runner is None:
                started = time.perf_counter_ns()
                cls = resolve_mold(spec, options.engine)
                key = engine_key(spec, options, cls.__name__)
                if cls.native and self.runners_enabled:
                    cls = isolated(cls)
                need = cls.estimate_bytes(spec, options)
                async with self._load_lock:  # one load at a time: room is made for it, then it is taken
                    if shared := self._loaded_engine(key):
                        runner = replace(shared, name=name, active=0, timer=None, idle=asyncio.Event())
                    else:
                        await self._make_room(name, need)
                        mold = cls(spec, options)
                        if isinstance(mold, BatchedMold):
                            mold.batching = self.batching
                        await self._load(name, mold)
                        load_ns = time.perf_counter_ns() - started
                        facts = mold.metadata()
                        log.info(
                            "loaded %s: %s on %s, %.0f ms%s",
                            name.display,
                            facts.get("engine", cls.engine),
                            facts.get("accelerator", "cpu"),
                            load_ns / 1e6,
                            f", runner pid {facts['runner_pid']}" if facts.get("runner_pid") else "",
                        )
                        # RAM is budgeted for what stayed off the GPU; GPU memory is taken as free at
                        # load (the engine offloads the layers that fit beside what others hold there)
                        size = max(need - int(facts.get("size_vram", 0)), 0)
                        runner = Runner(
                            name,
                            digest,
                            mold,
                            options.load_key(),
                            size=size,
                            engine_key=key,
                            engine=options.engine,
                        )
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
            runner.last_used = time.monotonic()
            runner.active -= 1
            if runner.active == 0:
                runner.idle.set()
                self._arm(runner)

    async def _load(self, name: ModelName, mold: Mold) -> None:
        """Load, within ``load_timeout``: a load that stalls past it is ended (a runner process is
        killed, which ends its load) and the request fails, as Ollama's OLLAMA_LOAD_TIMEOUT does."""
        loading = asyncio.ensure_future(mold.load())
        try:
            await asyncio.wait_for(asyncio.shield(loading), self.load_timeout)
        except TimeoutError:
            if mold.abort():
                with contextlib.suppress(Exception):
                    await loading
            else:  # it cannot be stopped: what it loads is let go once it is done
                loading.add_done_callback(lambda done: self._let_go(done, mold))
            raise ForgeError(
                f"timed out waiting for '{name.display}' to load ({self.load_timeout:g} s; "
                "FERROUSFORGE_LOAD_TIMEOUT or OLLAMA_LOAD_TIMEOUT)"
            ) from None

    def _let_go(self, load: asyncio.Future[None], mold: Mold) -> None:
        if not load.cancelled() and load.exception() is None:
            unloading = asyncio.ensure_future(mold.unload())
            self._unloading.add(unloading)
            unloading.add_done_callback(self._unloading.discard)

    def _loaded_engine(self, key: tuple[object, ...]) -> Runner | None:
        """A loaded name whose engine another name over the same weights can share."""
        return next((r for r in self.runners.values() if r.engine_key == key and r.mold.is_loaded()), None)

    def _engines(self) -> dict[int, list[Runner]]:
        """The loaded engines, each with the names that hold it."""
        engines: dict[int, list[Runner]] = {}
        for runner in self.runners.values():
            engines.setdefault(id(runner.mold), []).append(runner)
        return engines

    def held_bytes(self) -> int:
        """Memory the loaded engines hold (a shared one counted once)."""
        self._forget_dead()
        return sum(names[0].size for names in self._engines().values())

    def _forget_dead(self) -> None:
        """Let go of idle names whose engine is no longer loaded (its runner process ended)."""
        for runner in list(self.runners.values()):
            if runner.active == 0 and not runner.mold.is_loaded():
                del self.runners[runner.name]
                if runner.timer:
                    runner.timer.cancel()
                if all(r.mold is not runner.mold for r in self.runners.values()):
                    with contextlib.suppress(RuntimeError):  # (no running loop: closed at shutdown)
                        closing = asyncio.ensure_future(runner.mold.unload())
                        self._unloading.add(closing)
                        closing.add_done_callback(self._unloading.discard)
                log.info("unloaded %s (its engine had ended)", runner.name.display)

    async def _make_room(self, name: ModelName, need: int) -> None:
        """Evict idle engines, least recently used first, until ``need`` bytes and a slot are free."""
        if need > self.max_memory:
            raise Unavailable(
                f"model '{name}' needs about {need / 2**20:.0f} MiB, more than the memory budget of "
                f"{self.max_memory / 2**20:.0f} MiB (FERROUSFORGE_MAX_MEMORY)"
            )
        while self.held_bytes() + need > self.max_memory or len(self._engines()) >= self.max_loaded:
            # (held_bytes has let go of engines that ended)
            idle = [names for names in self._engines().values() if all(r.active == 0 for r in names)]
            if not idle:  # wait for a loaded model to finish its requests
                waits = [asyncio.ensure_future(r.idle.wait()) for r in self.runners.values()]
                done, pending = await asyncio.wait(
                    waits, timeout=self.room_timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for w in pending:
                    w.cancel()
                if not done:
                    busy = f"no room to load '{name}' while the loaded models are busy; retry shortly"
                    raise Unavailable(busy, 2)
                continue
            victims = min(idle, key=lambda names: max(r.last_used for r in names))
            for victim in victims:  # no await between the check and this: nobody can take it now
                del self.runners[victim.name]
                if victim.timer:
                    victim.timer.cancel()
            await victims[0].mold.unload()
            log.info(
                "unloaded %s to make room for %s", ", ".join(v.name.display for v in victims), name.display
            )

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
        if all(r.mold is not runner.mold for r in self.runners.values()):  # its engine's last name
            await runner.mold.unload()
            log.info("unloaded %s", runner.name.display)

    async def unload(self, name: ModelName) -> bool:
        """Unload a model, and its runners for other tasks."""
        unloaded = False
        for slot in [name, *(slot for slot in self.runners if slot != name and model_of(slot) == name)]:
            async with self._locks.setdefault(slot, asyncio.Lock()):  # (after a load under way)
                if (runner := self.runners.get(slot)) is not None:
                    await self._wait_idle(runner)
                    await self._unload(runner)
                    unloaded = True
        return unloaded

    async def shutdown(self) -> None:
        for runner in list(self.runners.values()):
            await self._unload(runner)

    def loaded(self) -> list[Runner]:
        self._forget_dead()
        return sorted(self.runners.values(), key=lambda r: r.name.display)


def task_slot(name: ModelName, task: str) -> ModelName:
    """The name a model's runner for another task is held under (``smollm2:135m#embed``)."""
    return replace(name, tag=f"{name.tag}#{task}")


def model_of(slot: ModelName) -> ModelName:
    """The model a runner's name is of (``smollm2:135m#embed`` → ``smollm2:135m``)."""
    return replace(slot, tag=slot.tag.partition("#")[0])


def weights_key(spec: ModelSpec) -> tuple[object, ...]:
    """What a model's weights are: its files (adapters and projector too, content-addressed) and the
    config they are read with."""
    return (spec.path, tuple(sorted(spec.files.items())), json.dumps(spec.config, sort_keys=True))


def engine_key(spec: ModelSpec, options: Options, engine: str) -> tuple[object, ...]:
    """What a loaded engine depends on: its weights, the load options and the engine. A name's
    template, system message and sampling parameters are not: the host applies them to each request."""
    return (*weights_key(spec), options.load_key(), engine)


def parse_engines(text: str) -> dict[str, str]:
    """``FERROUSFORGE_ENGINE``: "wgpu" (every format it runs) or "onnx=wgpu,gguf=llama.cpp" (per format)."""
    engines: dict[str, str] = {}
    for part in filter(None, (p.strip().lower() for p in text.split(","))):
        fmt, _, engine = part.rpartition("=")
        value = Options.parse({"engine": engine}).engine  # checks the name
        engines[{"": "*", "onnxruntime": "onnx"}.get(fmt, fmt)] = value
    return engines


def default_memory_budget() -> int:
    """Three quarters of the machine's RAM."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * 0.75)
    except (ValueError, OSError, AttributeError):
        return 8 << 30
