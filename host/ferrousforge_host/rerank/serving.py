"""Rerank: a cross-encoder scores each query/document pair; a bi-encoder (embedding model) ranks by
the cosine of its embeddings."""

from __future__ import annotations

from typing import Any

from ferrousforge.embedding import EmbeddingMold, EmbedItem, RerankMold, ScoreItem, cosine
from ferrousforge.errors import NotSupported
from ferrousforge.mold import resolve_mold
from ferrousforge.options import parse_keep_alive
from ferrousforge.protocol.embed import RerankRequest, rerank_results
from ferrousforge_host.scheduler import Scheduler


class RerankService:
    def __init__(self, scheduler: Scheduler, default_keep_alive: float | None) -> None:
        self.scheduler = scheduler
        self.default_keep_alive = default_keep_alive

    async def rerank(self, req: RerankRequest) -> dict[str, Any]:
        spec, _ = self.scheduler.spec(req.model)
        cls = resolve_mold(spec)
        if not issubclass(cls, RerankMold | EmbeddingMold):
            raise NotSupported(f"model '{req.model}' does not support rerank")
        options = self.scheduler.options(spec, req.options)
        keep_alive = parse_keep_alive(req.keep_alive, self.default_keep_alive)
        async with self.scheduler.use(req.model, options, keep_alive) as (runner, _):
            mold = runner.mold
            if isinstance(mold, RerankMold):
                scored = await mold.score([ScoreItem(req.query, d, req.truncate) for d in req.documents])
                scores = [s.score for s in scored]
                tokens = sum(s.tokens for s in scored)
            else:
                assert isinstance(mold, EmbeddingMold)
                vectors = await mold.embed([EmbedItem(t, req.truncate) for t in [req.query, *req.documents]])
                scores = [cosine(vectors[0].vector, v.vector) for v in vectors[1:]]
                tokens = sum(v.tokens for v in vectors)
        results = rerank_results(req, scores)
        return {"model": req.model.display, "results": results, "usage": {"total_tokens": tokens}}
