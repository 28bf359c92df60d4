"""Embeddings: one handler under Ollama's /api/embed, its legacy /api/embeddings, and OpenAI's
/v1/embeddings."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ferrousforge.embedding import EmbeddingMold, EmbedItem, truncate_dimensions
from ferrousforge.errors import NotSupported
from ferrousforge.mold import ModelSpec, Mold, resolve_mold
from ferrousforge.names import ModelName
from ferrousforge.options import parse_keep_alive
from ferrousforge.protocol.embed import EmbedRequest
from ferrousforge_host.scheduler import Scheduler


@dataclass
class Embeddings:
    vectors: list[list[float]]
    tokens: int
    load_duration: int
    total_duration: int


def require_kind(spec: ModelSpec, name: ModelName, kind: type, what: str) -> type[Mold]:
    cls = resolve_mold(spec)
    if not issubclass(cls, kind):
        raise NotSupported(f"model '{name}' does not support {what}")
    return cls


class EmbeddingService:
    def __init__(self, scheduler: Scheduler, default_keep_alive: float | None) -> None:
        self.scheduler = scheduler
        self.default_keep_alive = default_keep_alive

    async def embed(self, req: EmbedRequest) -> Embeddings:
        started = time.perf_counter_ns()
        spec, _ = self.scheduler.spec(req.model)
        require_kind(spec, req.model, EmbeddingMold, "embeddings")
        options = self.scheduler.options(spec, req.options)
        keep_alive = parse_keep_alive(req.keep_alive, self.default_keep_alive)
        async with self.scheduler.use(req.model, options, keep_alive) as (runner, load_ns):
            assert isinstance(runner.mold, EmbeddingMold)
            results = await runner.mold.embed([EmbedItem(x, req.truncate) for x in req.inputs])
        return Embeddings(
            [truncate_dimensions(r.vector, req.dimensions) for r in results],
            sum(r.tokens for r in results),
            load_ns,
            time.perf_counter_ns() - started,
        )
