"""The Mold: one small interface for every model kind.

An engine subclasses a Mold kind (``TextGenerationMold``, later embeddings and rerank), declares the
formats and capabilities it serves, implements its few synchronous primitives (load, unload, stream
one request) and registers itself with ``@register_mold``. The base class supplies the rest: async
lifecycle, infer/stream/batch, capability checks, and a worker thread of its own so that an engine
that is not thread-safe never blocks the event loop. Browser engines override the async methods.
"""

from __future__ import annotations

import asyncio
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, ClassVar, TypeVar

from ferrousforge.errors import NotSupported
from ferrousforge.options import Options

T = TypeVar("T")


class Capability(StrEnum):
    COMPLETION = "completion"
    EMBEDDING = "embedding"
    RERANK = "rerank"
    TOOLS = "tools"
    VISION = "vision"
    THINKING = "thinking"
    INSERT = "insert"  # fill-in-the-middle (``suffix``)
    TRANSCRIPTION = "transcription"  # speech to text (ferrousforge.speech)
    SPEECH = "speech"  # text to speech


@dataclass
class ModelSpec:
    """What a Mold is built from: resolved by the store (host) or the catalogue (browser)."""

    name: str
    format: str
    path: str
    config: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # named files beside the main one (tokenizer.json)
    messages: list[dict[str, Any]] = field(default_factory=list)  # Modelfile MESSAGEs: chats start with them

    @property
    def adapters(self) -> list[str]:
        """The model's LoRA adapters (``adapter.0``, ``adapter.1``, ... in ``files``), in order."""
        named = [k for k in self.files if k.startswith("adapter.")]
        return [self.files[k] for k in sorted(named, key=lambda k: int(k.split(".", 1)[1]))]

    @property
    def task(self) -> str:
        return model_task(self.config)

    def for_task(self, task: str) -> ModelSpec:
        """The same model, run for another task (a chat model's embeddings)."""
        return replace(self, config={**self.config, "task": task})


# GGUF architectures that only encode: embedding models even where the file names no pooling
ENCODER_ARCHS = frozenset(
    (
        "bert",
        "nomic-bert",
        "nomic-bert-moe",
        "jina-bert-v2",
        "jina-bert-v3",
        "modern-bert",
        "neo-bert",
        "eurobert",
    )
)


def model_task(config: dict[str, Any]) -> str:
    """What a model is for ("generate" | "embed" | "rerank" | "transcription" | "speech"): its config's
    ``task``, else for a GGUF what its metadata says, as Ollama reads it: a ``<arch>.pooling_type`` (or
    an encoder architecture) makes an embedding model."""
    if "task" in config:
        return str(config["task"])
    info = config.get("model_info") or {}
    arch = str(info.get("general.architecture") or config.get("model_family", ""))
    if f"{arch}.pooling_type" in info or arch in ENCODER_ARCHS:
        return "embed"
    return "generate"


class Mold(ABC):
    formats: ClassVar[tuple[str, ...]] = ()
    # "generate" | "embed" | "rerank" | "transcription" | "speech": what the model's config says it is for
    task: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    engine: ClassVar[str] = ""
    native: ClassVar[bool] = False  # runs native code: the host runs it in a runner process of its own
    auto: ClassVar[bool] = True  # chosen by engine "auto"; False: only when asked for by name (or preferred)
    # what a request may need that this engine cannot give ("format", "logprobs", "logit_bias",
    # "images"): "auto" and a server's preferred engine pass it by for such a request
    lacks: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, spec: ModelSpec, options: Options) -> None:
        self.spec = spec
        self.options = options
        self._executor: ThreadPoolExecutor | None = None

    # -- engine primitives --------------------------------------------------------------
    @abstractmethod
    def load_sync(self) -> None: ...

    @abstractmethod
    def unload_sync(self) -> None: ...

    @abstractmethod
    def is_loaded(self) -> bool: ...

    def metadata(self) -> dict[str, Any]:
        return {"engine": self.engine, "format": self.spec.format, **self.spec.config}

    def abort(self) -> bool:
        """End a load that has stalled, from another thread; whether it could (an engine in a process of
        its own can be killed; one in this process cannot be stopped)."""
        return False

    def memory_bytes(self) -> int:
        """Best estimate of memory the loaded model holds."""
        return 0

    @classmethod
    def estimate_bytes(cls, spec: ModelSpec, options: Options) -> int:
        """Memory a load would take, known before loading: by default the files plus a fifth."""
        files = [spec.path, *spec.files.values()]
        return int(sum(os.path.getsize(f) for f in files if os.path.exists(f)) * 1.2)

    @classmethod
    def preferred(cls) -> bool:
        """Whether "auto" should choose this engine over the others for its formats (measured here)."""
        return False

    @classmethod
    def refuses(cls, spec: ModelSpec) -> str:
        """Why this engine cannot run a model its formats include ("" when it can)."""
        return ""

    # -- supplied by the base -----------------------------------------------------------
    def require(self, capability: Capability) -> None:
        if capability not in self.capabilities:
            raise NotSupported(f"model '{self.spec.name}' does not support {capability.value}")

    async def load(self) -> None:
        await self.run_in_worker(self.load_sync)

    async def unload(self) -> None:
        await self.run_in_worker(self.unload_sync)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def run_in_worker(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"mold-{self.spec.name}")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def iterate_in_worker(self, produce: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
        """Run a blocking generator on the worker, handing items to the event loop as they come.

        Closing the async iterator (a client went away) stops the generator at its next item.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        cancelled = threading.Event()

        def pump() -> None:
            try:
                for item in produce():
                    loop.call_soon_threadsafe(queue.put_nowait, (0, item))
                    if cancelled.is_set():
                        break
            except BaseException as exc:
                loop.call_soon_threadsafe(queue.put_nowait, (2, exc))
            else:
                loop.call_soon_threadsafe(queue.put_nowait, (1, None))

        done = asyncio.ensure_future(self.run_in_worker(pump))
        try:
            while True:
                kind, value = await queue.get()
                if kind == 0:
                    yield value
                elif kind == 1:
                    break
                else:
                    raise value
        finally:
            cancelled.set()
            await asyncio.shield(done)


_REGISTRY: list[type[Mold]] = []
M = TypeVar("M", bound=type[Mold])


def register_mold(cls: M) -> M:
    """Class decorator: make a Mold available for the formats it declares."""
    _REGISTRY.append(cls)
    return cls


def resolve_mold(spec: ModelSpec, engine: str = "auto", needs: frozenset[str] = frozenset()) -> type[Mold]:
    """The registered Mold for a model's format and task: the one named ``engine``, or for "auto" the
    latest registration that takes part in automatic choice and has what the request ``needs``."""
    task = spec.task
    found = [cls for cls in reversed(_REGISTRY) if spec.format in cls.formats and cls.task == task]
    if not found:
        raise NotSupported(f"no engine is registered for {spec.format} models of task '{task}'")
    named = [cls for cls in found if cls.engine == engine]
    if named and (reason := named[0].refuses(spec)):
        raise NotSupported(reason)
    found = [cls for cls in found if not cls.refuses(spec)] or found
    if engine == "auto":
        able = [cls for cls in found if not cls.lacks & needs] or found
        chosen = [cls for cls in able if cls.preferred()] or [cls for cls in able if cls.auto]
    else:
        chosen = [cls for cls in found if cls.engine == engine]
    if not chosen:
        engines = ", ".join(sorted({cls.engine for cls in found}))
        raise NotSupported(
            f"engine '{engine}' does not run {spec.format} models of task '{task}' (has: {engines})"
        )
    return chosen[0]
