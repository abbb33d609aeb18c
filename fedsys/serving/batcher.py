"""Dynamic batching with the model run off the event loop, in one dedicated thread.

The event loop parses requests while the inference thread runs the model, so on two cores
request handling and inference overlap. The thread takes the first queued request, then
gathers batch-mates until ``max_batch_size`` rows or ``max_wait_ms`` after the first one
arrived. It only waits while other requests have been *announced* (their handler started
but has not queued yet): a lone request runs at once, so batch-1 latency pays no wait.

Each request carries the model object it was admitted with, and a batch only groups
requests for the same object, so a request admitted before a hot swap finishes on the old
model. Hand-written: no maintained library batches requests for an in-process torch model.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from fedsys.errors import BatcherStopped

FloatArray = npt.NDArray[np.float32]


class Runnable(Protocol):
    """What the batcher runs: a batch of rows in, one row of logits per input row out."""

    @property
    def name(self) -> str: ...

    def run(self, x: FloatArray) -> FloatArray: ...


@dataclass(eq=False)
class _Item:
    model: Runnable
    x: FloatArray
    future: asyncio.Future[FloatArray]
    loop: asyncio.AbstractEventLoop
    queued_at: float = field(default_factory=time.perf_counter)


_STOP = object()


def _resolve(fut: asyncio.Future[FloatArray], value: FloatArray | BaseException) -> None:
    if fut.done():  # the client went away and the handler was cancelled
        return
    if isinstance(value, BaseException):
        fut.set_exception(value)
    else:
        fut.set_result(value)


class Ticket:
    """One announced request; settling it (queued, or given up) withdraws the announcement."""

    def __init__(self, batcher: Batcher) -> None:
        self._batcher: Batcher | None = batcher

    def settle(self) -> None:
        if self._batcher is not None:
            self._batcher._announced -= 1
            self._batcher = None


class Batcher:
    """One inference thread fed by a thread-safe queue; results return to the event loop."""

    def __init__(
        self,
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[str, int], None] | None = None,
    ) -> None:
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._queue: queue.Queue[_Item | object] = queue.Queue()
        self._carry: deque[_Item] = deque()  # taken from the queue, for another model
        self._announced = 0  # handlers started, not yet queued (event-loop thread writes)
        self._thread: threading.Thread | None = None
        self._stopped = False

    # event-loop side ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="fedsys-inference", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Finish the queued work, then end the thread (requests after this fail)."""
        self._stopped = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        # Anything queued after the thread drained: answer it rather than leave it waiting.
        leftovers = list(self._carry)
        self._carry.clear()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Item):
                leftovers.append(item)
        for it in leftovers:
            it.loop.call_soon_threadsafe(_resolve, it.future, BatcherStopped("shutting down"))

    @contextlib.contextmanager
    def announce(self) -> Iterator[Ticket]:
        """Mark a request as on its way (still parsing), so a forming batch may wait for it."""
        ticket = Ticket(self)
        self._announced += 1
        try:
            yield ticket
        finally:
            ticket.settle()

    async def submit(
        self, model: Runnable, x: FloatArray, ticket: Ticket | None = None
    ) -> FloatArray:
        """Logits for ``x`` (rows) from ``model``, computed in the inference thread."""
        if ticket is not None:
            ticket.settle()
        if self._stopped or self._thread is None:
            raise BatcherStopped("the inference thread is not running")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[FloatArray] = loop.create_future()
        self._queue.put(_Item(model, x, fut, loop))
        return await fut

    # inference-thread side -----------------------------------------------------------------

    def _next(self, timeout: float | None) -> _Item | object | None:
        if self._carry:
            return self._carry.popleft()
        try:
            if timeout is None:
                return self._queue.get()
            if timeout <= 0:
                return self._queue.get_nowait()
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _gather(self, first: _Item) -> tuple[list[_Item], bool]:
        """Batch-mates of ``first`` (same model); True when the stop marker was seen."""
        batch, rows = [first], len(first.x)
        deadline = first.queued_at + self.max_wait
        skipped: list[_Item] = []
        stop = False
        while rows < self.max_batch_size:
            # Wait only if a request is on its way; otherwise take what is queued now.
            wait = deadline - time.perf_counter() if self._announced > 0 else 0.0
            item = self._next(wait)
            if item is None:
                if wait <= 0:
                    break
                continue
            if item is _STOP:
                stop = True
                break
            assert isinstance(item, _Item)
            if item.model is not first.model or rows + len(item.x) > self.max_batch_size:
                skipped.append(item)
                if rows + len(item.x) > self.max_batch_size:
                    break
                continue
            batch.append(item)
            rows += len(item.x)
        self._carry.extend(skipped)
        return batch, stop

    def _run(self, batch: list[_Item]) -> None:
        model = batch[0].model
        x = batch[0].x if len(batch) == 1 else np.concatenate([it.x for it in batch])
        try:
            logits = model.run(x)
        except Exception as exc:  # a model failure answers its requests, never kills the thread
            for it in batch:
                it.loop.call_soon_threadsafe(_resolve, it.future, exc)
            return
        if self.on_batch is not None:
            self.on_batch(model.name, len(x))
        start = 0
        for it in batch:
            part = logits[start : start + len(it.x)]
            start += len(it.x)
            it.loop.call_soon_threadsafe(_resolve, it.future, part)

    def _loop(self) -> None:
        stop = False
        while True:
            item = self._next(0.0 if stop else None)
            if item is None:  # stopping and drained
                return
            if item is _STOP:
                stop = True
                continue
            assert isinstance(item, _Item)
            batch, saw_stop = self._gather(item)
            stop = stop or saw_stop
            self._run(batch)
