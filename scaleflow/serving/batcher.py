"""Server-side dynamic batching: concurrent requests share one model call.

A model call on a small network costs about the same for 1 row as for 64 (dispatch dominates), so
under concurrent load the server gathers the rows of waiting requests, up to `max_batch_size`,
waiting at most `batch_timeout_s` for more once the first one arrives, runs one call in a thread and
hands every request its own rows back. While a batch runs, new requests queue and form the next one,
so under load batches fill without waiting; a lone request waits only `batch_timeout_s`.

With `max_batch_size` 1 (batching off) every request calls the model on its own, up to `threads`
at once; a request with more rows than `max_batch_size` always runs alone.

Example:
    batcher = Batcher(predict, max_batch_size=64, timeout_s=0.002, executor=pool,
                      on_batch=lambda x, y: print(len(x)))
    y = await batcher(x)            # inside the server's event loop, from many requests at once
"""

from __future__ import annotations

import asyncio
from collections import deque
from concurrent.futures import Executor
from typing import Callable

import numpy as np


class Batcher:
    """Args:
        predict: `predict(x) -> outputs`, rows in, rows out (an array or a dict of arrays; thread-safe).
        max_batch_size: most rows per model call; 1 turns batching off.
        timeout_s: how long a batch waits to fill after its first request.
        executor: where model calls run (they release the GIL in TensorFlow).
        on_batch: `on_batch(x, outputs)` after every model call: the batch-size histogram, class
            counts and drift are computed once per batch, not once per request.
        concurrency: batches in flight at once (TF Serving's num_batch_threads): while one runs, the
            next gathers and starts, so the server's HTTP work and the model's compute overlap.
    """

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], max_batch_size: int, timeout_s: float,
                 executor: Executor, on_batch: Callable[[np.ndarray, np.ndarray], None] | None = None,
                 concurrency: int = 2):
        self.predict, self.max_batch_size, self.timeout_s = predict, max_batch_size, timeout_s
        self.executor, self.on_batch, self.concurrency = executor, on_batch, max(1, concurrency)
        self._slots: asyncio.Semaphore | None = None
        self._running: set = set()
        self._queue: deque = deque()
        self._rows = 0  # rows waiting in the queue
        self._drainer: asyncio.Task | None = None

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.max_batch_size <= 1 or len(x) >= self.max_batch_size:
            return await self._run(x)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((x, future))
        self._rows += len(x)
        if self._drainer is None or self._drainer.done():
            # The drainer runs only while requests wait: no idle task per version to clean up.
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _run(self, x: np.ndarray) -> np.ndarray:
        outputs = await asyncio.get_running_loop().run_in_executor(self.executor, self.predict, x)
        if self.on_batch is not None:
            self.on_batch(x, outputs)
        return outputs

    async def _drain(self) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.concurrency)
        loop = asyncio.get_running_loop()
        while self._queue:
            # A free slot first: while all are busy, waiting requests keep joining the next batch.
            await self._slots.acquire()
            if self._rows < self.max_batch_size and self.timeout_s > 0:
                # One timer per batch (not one per arrival): requests that come meanwhile join it.
                await asyncio.sleep(self.timeout_s)
            batch, rows = [], 0
            while self._queue and (not batch or rows + len(self._queue[0][0]) <= self.max_batch_size):
                item = self._queue.popleft()
                batch.append(item)
                rows += len(item[0])
            self._rows -= rows
            task = loop.create_task(self._call(batch))
            self._running.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._finished)
        # No await between the empty check and returning: a request queued after this point sees the
        # task done and starts a new drainer. Batches still running finish on their own.

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._slots.release()

    async def _call(self, batch: list) -> None:
        try:
            outputs = await self._run(np.concatenate([x for x, _ in batch]) if len(batch) > 1 else batch[0][0])
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        start = 0
        for x, future in batch:
            if not future.done():  # a client that went away cancelled its future
                future.set_result(rows(outputs, start, start + len(x)))
            start += len(x)


def rows(outputs, start: int, stop: int):
    """Rows start:stop of a model's outputs: one array or a dict of named arrays."""
    if isinstance(outputs, dict):
        return {name: value[start:stop] for name, value in outputs.items()}
    return outputs[start:stop]
