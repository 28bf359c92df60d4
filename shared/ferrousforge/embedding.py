"""The embedding and rerank Mold kinds.

An engine implements one primitive per kind, synchronous and batched (``embed_sync`` over a list of
texts, ``score_sync`` over query/document pairs); the base class supplies dynamic batching across
concurrent requests, runs calls on the Mold's worker, and the shared post-processing (cosine
rerank for bi-encoders).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from ferrousforge.batching import DynamicBatcher
from ferrousforge.errors import BadRequest
from ferrousforge.mold import Capability, Mold

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class Embedded:
    vector: Sequence[float]  # a list, or an engine's own array type (numpy on the host)
    tokens: int


def token_outside_vocabulary(token: int, n_vocab: int) -> BadRequest:
    """The error for an input's token id the model's vocabulary lacks: most often a client's OpenAI
    token ids."""
    return BadRequest(
        f"token id {token} is outside the model's vocabulary of {n_vocab} (token ids are the model's own"
        " tokenizer's; a client that sends OpenAI's, as LangChain's OpenAIEmbeddings does unless"
        " check_embedding_ctx_length=False, should send text)"
    )


@dataclass(frozen=True)
class EmbedItem:
    text: str | list[int]  # text, or token ids of the model's own tokenizer
    truncate: bool = True


@dataclass(frozen=True)
class ScoreItem:
    query: str
    document: str
    truncate: bool = True


@dataclass
class Scored:
    score: float
    tokens: int


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb) if na and nb else 0.0


def relevance(logits: Sequence[float]) -> float:
    """A cross-encoder's score in [0, 1]: the sigmoid of one logit, or the softmax of "relevant"
    (the second of two classes)."""
    if len(logits) == 1:
        return 1.0 / (1.0 + math.exp(-logits[0]))
    a, b = logits[0], logits[1]
    return 1.0 / (1.0 + math.exp(a - b))


def check_length(tokens: int, limit: int, truncate: bool) -> None:
    """``truncate: false`` on an input longer than the model takes is a 400 (host and page alike)."""
    if tokens > limit and not truncate:
        raise BadRequest(
            f"input is {tokens} tokens, longer than the model's limit of {limit}; "
            "set truncate to true to cut it"
        )


def check_dimensions(dimensions: int, width: int) -> None:
    """Matryoshka's ``dimensions``: 1 to the model's vectors' width."""
    if not 1 <= dimensions <= width:
        raise BadRequest(f"'dimensions' must be between 1 and {width}")


class BatchedMold(Mold):
    """Base of the kinds whose primitive takes a batch: coalesces concurrent requests into it."""

    max_batch: ClassVar[int] = 32
    batching: bool = True  # off: each request runs alone, in chunks of max_batch (for comparison)

    async def batched(self, primitive: Callable[[list[In]], list[Out]], items: list[In]) -> list[Out]:
        if not self.batching:
            out: list[Out] = []
            for start in range(0, len(items), self.max_batch):
                out += await self.run_in_worker(primitive, items[start : start + self.max_batch])
            return out
        batcher = self.__dict__.get("_batcher")
        if batcher is None:
            batcher = self.__dict__["_batcher"] = DynamicBatcher(
                lambda batch: self.run_in_worker(primitive, batch), self.max_batch
            )
        result: list[Out] = await batcher.submit(items)
        return result


class EmbeddingMold(BatchedMold):
    task: ClassVar[str] = "embed"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.EMBEDDING})

    @abstractmethod
    def embed_sync(self, items: list[EmbedItem]) -> list[Embedded]:
        """Engine primitive: embed a batch of at most ``max_batch`` items."""

    async def embed(self, items: list[EmbedItem]) -> list[Embedded]:
        return await self.batched(self.embed_sync, items)


class RerankMold(BatchedMold):
    task: ClassVar[str] = "rerank"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.RERANK})

    @abstractmethod
    def score_sync(self, items: list[ScoreItem]) -> list[Scored]:
        """Engine primitive: relevance in [0, 1] for each query/document pair."""

    async def score(self, items: list[ScoreItem]) -> list[Scored]:
        return await self.batched(self.score_sync, items)
