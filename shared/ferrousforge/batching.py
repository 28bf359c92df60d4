"""Dynamic batching: concurrent requests to one model are coalesced into one engine call.

Continuous batching: when the engine is idle a request runs at once (no added latency at low load);
while a call runs, arriving requests queue, and the next call takes everything queued, up to
``max_items``. ``max_wait`` (default 0) can hold an idle engine back a little to gather more. Each
request gets its own slice back; a request larger than ``max_items`` is split over several calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Pending(Generic[In, Out]):
    items: list[In]
    future: asyncio.Future[list[Out]]
    results: list[Out] = field(default_factory=list)


class DynamicBatcher(Generic[In, Out]):
    def __init__(
        self,
        run: Callable[[list[In]], Awaitable[list[Out]]],
        max_items: int = 32,
        max_wait: float = 0.0,
    ) -> None:
        self.run = run
        self.max_items = max_items
        self.max_wait = max_wait
        self._queue: list[_Pending[In, Out]] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self.calls = 0  # engine calls made, and the items they carried: coalescing shows as items/calls
        self.items = 0

    async def submit(self, items: list[In]) -> list[Out]:
        if not items:
            return []
        loop = asyncio.get_running_loop()
        pending: _Pending[In, Out] = _Pending(list(items), loop.create_future())
        self._queue.append(pending)
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        self._wakeup.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._collect())
        return await pending.future

    def _waiting(self) -> int:
        return sum(len(p.items) for p in self._queue)

    async def _collect(self) -> None:
        assert self._wakeup is not None
        while self._queue:
            await asyncio.sleep(0)  # let requests that arrived in the same loop tick join
            deadline = asyncio.get_running_loop().time() + self.max_wait
            while self.max_wait and self._waiting() < self.max_items:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except TimeoutError:
                    break
            await self._run_one_batch()

    async def _run_one_batch(self) -> None:
        batch: list[In] = []
        owners: list[tuple[_Pending[In, Out], int]] = []
        while self._queue and len(batch) < self.max_items:
            pending = self._queue[0]
            take = min(self.max_items - len(batch), len(pending.items))
            batch.extend(pending.items[:take])
            owners.append((pending, take))
            pending.items = pending.items[take:]
            if not pending.items:
                self._queue.pop(0)
        self.calls += 1
        self.items += len(batch)
        try:
            results = await self.run(batch)
        except BaseException as exc:
            for pending, _ in owners:
                if not pending.future.done():
                    pending.future.set_exception(exc)
                if pending in self._queue:
                    self._queue.remove(pending)
            if not isinstance(exc, Exception):
                raise
            return
        offset = 0
        for pending, take in owners:
            pending.results.extend(results[offset : offset + take])
            offset += take
            if not pending.items and not pending.future.done():
                pending.future.set_result(pending.results)
