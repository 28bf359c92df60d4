"""Embeddings: one handler under Ollama's /api/embed, its legacy /api/embeddings, and OpenAI's
/v1/embeddings. As Ollama's, /api/embed (and /v1/embeddings) answers unit-length vectors; the legacy
endpoint answers the model's own."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ferrousforge.embedding import EmbeddingMold, EmbedItem, check_dimensions
from ferrousforge.errors import NotSupported
from ferrousforge.mold import ModelSpec, Mold, resolve_mold
from ferrousforge.names import ModelName
from ferrousforge.options import parse_keep_alive
from ferrousforge.protocol.embed import EmbedRequest
from ferrousforge_host.scheduler import Scheduler


@dataclass
class Embeddings:
    vectors: np.ndarray  # [inputs, dimensions] float32
    tokens: int
    load_duration: int
    total_duration: int
    accelerator: str = "cpu"  # where the host computed them ("cpu", "cuda", ...)


def unit(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1 (a zero row stays zero)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def matryoshka(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """Keep the first ``dimensions`` values of each vector, renormalised."""
    if not len(vectors):
        return vectors  # nothing asked, nothing to cut
    check_dimensions(dimensions, vectors.shape[1])
    return unit(vectors[:, :dimensions])


def require_kind(spec: ModelSpec, name: ModelName, kind: type, what: str) -> type[Mold]:
    cls = resolve_mold(spec)
    if not issubclass(cls, kind):
        raise NotSupported(f"model '{name}' does not support {what}")
    return cls


def chat_embeds(spec: ModelSpec) -> bool:
    """Whether a text-generation GGUF gives embeddings: the mean of its last hidden states, from a
    context of its own (llama.cpp's embeddings mode), as Ollama's /api/embed answers for one."""
    if spec.format != "gguf" or spec.task != "generate":
        return False
    try:
        return issubclass(resolve_mold(spec.for_task("embed")), EmbeddingMold)
    except NotSupported:
        return False


class EmbeddingService:
    def __init__(self, scheduler: Scheduler, default_keep_alive: float | None) -> None:
        self.scheduler = scheduler
        self.default_keep_alive = default_keep_alive

    async def embed(self, req: EmbedRequest, normalize: bool = True) -> Embeddings:
        started = time.perf_counter_ns()
        spec, _ = self.scheduler.spec(req.model)
        task = "embed" if chat_embeds(spec) else None  # a chat model's, as Ollama gives them
        if task is None:
            require_kind(spec, req.model, EmbeddingMold, "embeddings")
        options = self.scheduler.options(spec, req.options)
        keep_alive = parse_keep_alive(req.keep_alive, self.default_keep_alive)
        async with self.scheduler.use(req.model, options, keep_alive, task) as (runner, load_ns):
            assert isinstance(runner.mold, EmbeddingMold)
            results = await runner.mold.embed([EmbedItem(x, req.truncate) for x in req.inputs])
            accelerator = runner.mold.metadata().get("accelerator", "cpu")
        vectors = np.asarray([r.vector for r in results], dtype=np.float32) if results else np.zeros((0, 0))
        if normalize and len(vectors):
            vectors = unit(vectors)
        if req.dimensions is not None:
            vectors = matryoshka(vectors, req.dimensions)
        return Embeddings(
            vectors,
            sum(r.tokens for r in results),
            load_ns,
            time.perf_counter_ns() - started,
            accelerator,
        )
