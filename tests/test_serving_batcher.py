"""The dynamic batcher, driven by fake models: which requests share a model call, and that
every request gets its own rows back. Batch composition is forced with events, not timing."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from fedsys.serving.batcher import Batcher, BatcherStopped, FloatArray


class FakeModel:
    """Logits = rows * factor (one column); records batch sizes; can hold its first call."""

    def __init__(self, name: str = "m", factor: float = 1.0, hold_first: bool = False) -> None:
        self.name = name
        self.factor = factor
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.release = threading.Event()
        self.entered = threading.Event()
        if not hold_first:
            self.release.set()

    def run(self, x: FloatArray) -> FloatArray:
        self.threads.add(threading.current_thread().name)
        self.batches.append(len(x))
        self.entered.set()
        self.release.wait(timeout=30)
        return (x[:, :1] * self.factor).astype(np.float32)


def _rows(start: int, n: int = 1) -> FloatArray:
    return np.arange(start, start + n, dtype=np.float32).reshape(n, 1)


async def _queued_behind_a_held_call(
    batcher: Batcher, model: FakeModel, others: list[tuple[FakeModel, FloatArray]]
) -> list[FloatArray]:
    """Submit one request, hold the model inside it, queue ``others``, then release."""
    first = asyncio.create_task(batcher.submit(model, _rows(1000)))
    await asyncio.to_thread(model.entered.wait, 30)
    tasks = [asyncio.create_task(batcher.submit(m, x)) for m, x in others]
    await asyncio.sleep(0)  # each task runs up to its await: everything is queued now
    model.release.set()
    for m, _ in others:
        m.release.set()
    results = await asyncio.gather(first, *tasks)
    return list(results[1:])


def test_requests_queued_during_a_model_call_form_one_batch() -> None:
    async def main() -> None:
        model = FakeModel(hold_first=True)
        batcher = Batcher(max_batch_size=32, max_wait_ms=0)
        batcher.start()
        try:
            xs = [_rows(i) for i in range(7)]
            out = await _queued_behind_a_held_call(batcher, model, [(model, x) for x in xs])
        finally:
            batcher.stop()
        assert model.batches == [1, 7]
        for x, y in zip(xs, out, strict=True):
            np.testing.assert_array_equal(x, y)  # each request gets its own rows back
        assert model.threads == {"fedsys-inference"}  # never the event loop's thread

    asyncio.run(main())


def test_max_batch_size_caps_rows_per_call() -> None:
    async def main() -> None:
        model = FakeModel(hold_first=True)
        batcher = Batcher(max_batch_size=4, max_wait_ms=0)
        batcher.start()
        try:
            others = [(model, _rows(i)) for i in range(9)] + [(model, _rows(100, 4))]
            out = await _queued_behind_a_held_call(batcher, model, others)
        finally:
            batcher.stop()
        # 9 single rows then a 4-row request: 4 + 4 + 1 (the 4 rows would overflow) + 4
        assert model.batches == [1, 4, 4, 1, 4]
        np.testing.assert_array_equal(out[-1], _rows(100, 4))

    asyncio.run(main())


def test_a_request_larger_than_the_batch_runs_alone() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = Batcher(max_batch_size=4, max_wait_ms=0)
        batcher.start()
        try:
            y = await batcher.submit(model, _rows(0, 10))
        finally:
            batcher.stop()
        assert model.batches == [10] and y.shape == (10, 1)

    asyncio.run(main())


def test_batches_never_mix_models() -> None:
    async def main() -> None:
        old, new = FakeModel("m", 1.0, hold_first=True), FakeModel("m", -1.0)
        batcher = Batcher(max_batch_size=32, max_wait_ms=0)
        batcher.start()
        try:
            others = [(old if i % 2 else new, _rows(i)) for i in range(6)]
            out = await _queued_behind_a_held_call(batcher, old, others)
        finally:
            batcher.stop()
        assert old.batches == [1, 3] and new.batches == [3]
        for (m, x), y in zip(others, out, strict=True):
            np.testing.assert_array_equal(y, x * m.factor)  # answered by its own model

    asyncio.run(main())


def test_an_announced_request_is_waited_for() -> None:
    async def main() -> None:
        model = FakeModel()
        # A long max wait: the batch closes because the announced request arrives, not
        # because time ran out.
        batcher = Batcher(max_batch_size=2, max_wait_ms=1000)
        batcher.start()
        try:
            with batcher.announce() as ticket:
                first = asyncio.create_task(batcher.submit(model, _rows(0)))
                await asyncio.sleep(0)
                second = await batcher.submit(model, _rows(1), ticket)
            await first
        finally:
            batcher.stop()
        assert model.batches == [2]
        np.testing.assert_array_equal(second, _rows(1))

    asyncio.run(main())


def test_a_lone_request_does_not_wait() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = Batcher(max_batch_size=32, max_wait_ms=60_000)  # waiting would hang
        batcher.start()
        try:
            with batcher.announce() as ticket:
                y = await asyncio.wait_for(batcher.submit(model, _rows(5), ticket), 30)
        finally:
            batcher.stop()
        assert model.batches == [1]
        np.testing.assert_array_equal(y, _rows(5))

    asyncio.run(main())


def test_a_failing_model_fails_its_requests_only() -> None:
    class Broken(FakeModel):
        def run(self, x: FloatArray) -> FloatArray:
            raise RuntimeError("boom")

    async def main() -> None:
        batcher = Batcher()
        batcher.start()
        try:
            with pytest.raises(RuntimeError, match="boom"):
                await batcher.submit(Broken(), _rows(0))
            ok = await batcher.submit(FakeModel(), _rows(3))
        finally:
            batcher.stop()
        np.testing.assert_array_equal(ok, _rows(3))

    asyncio.run(main())


def test_submit_after_stop_is_refused() -> None:
    async def main() -> None:
        batcher = Batcher()
        batcher.start()
        batcher.stop()
        with pytest.raises(BatcherStopped):
            await batcher.submit(FakeModel(), _rows(0))
        assert not any(t.name == "fedsys-inference" for t in threading.enumerate())

    asyncio.run(main())
