"""A small async micro-batcher: concurrent requests of one process share one model call.

Requests queue on the event loop; one drain task hands everything queued (up to `max_batch_size`)
to `fn(items) -> results` on the engine's single worker thread, and while that batch runs the next
one gathers. With `max_wait_ms = 0` nothing ever waits for company: a lone request goes straight
through (no added latency at concurrency 1), and under load batches form by themselves, as large
as the arrival rate times the batch's service time. `max_wait_ms > 0` holds the first request of a
batch that long for more to arrive (larger batches, higher latency floor).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any


class MicroBatcher:
    def __init__(
        self,
        fn: Callable[[list], list],
        executor: Executor | None = None,
        *,
        max_batch_size: int = 64,
        max_wait_ms: float = 0.0,
    ):
        self.fn, self.executor = fn, executor
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_ms / 1000
        self._queue: deque[tuple[Any, asyncio.Future]] = deque()
        self._drain: asyncio.Task | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: Any) -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((item, future))
        if self._drain is None or self._drain.done():
            self._drain = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            if self.max_wait_s and len(self._queue) < self.max_batch_size:
                await asyncio.sleep(self.max_wait_s)
            elif self.executor is None:
                await asyncio.sleep(0)  # let requests that are already parsed join
            batch = [self._queue.popleft() for _ in range(min(self.max_batch_size, len(self._queue)))]
            batch = [(item, fut) for item, fut in batch if not fut.done()]  # cancelled meanwhile
            if not batch:
                continue
            try:
                items = [item for item, _ in batch]
                if self.executor is None:
                    results = self.fn(items)  # on the event loop: no thread hop, no GIL hand-offs
                else:
                    results = await loop.run_in_executor(self.executor, self.fn, items)
            except Exception as exc:  # noqa: BLE001 - every waiter learns what happened
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0
