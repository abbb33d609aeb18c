"""Which rounds are on disk: the publisher writes a round's model only after its checkpoint.

A version published before its round's checkpoint was durable would survive a crash that
the round itself does not: the resumed run trains that round again and publishes it a
second time, under the next number. Holding each publish until the checkpoint of its round
(or a later one) is written keeps the registry a prefix of what a resume continues from.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any


class RoundGate:
    """The last round whose checkpoint is durable, and a wait for it."""

    def __init__(self, durable: int = 0) -> None:
        self._cond = threading.Condition()
        self._durable = durable
        self._broken: str | None = None

    def mark(self, rnd: int) -> None:
        with self._cond:
            self._durable = max(self._durable, rnd)
            self._cond.notify_all()

    def break_(self, reason: str) -> None:
        """Checkpoints stopped (a write failed): waiters give up instead of hanging."""
        with self._cond:
            self._broken = reason
            self._cond.notify_all()

    def watch(self, rnd: int, future: Future[Any]) -> None:
        """Mark ``rnd`` durable when ``future`` (its checkpoint write) succeeds."""

        def done(f: Future[Any]) -> None:
            exc = f.exception()
            if exc is None:
                self.mark(rnd)
            else:
                self.break_(f"the checkpoint of round {rnd} failed: {exc}")

        future.add_done_callback(done)

    def wait(self, rnd: int, timeout: float) -> str | None:
        """None once round ``rnd`` is durable; else why it is not (broken or timed out)."""
        with self._cond:
            self._cond.wait_for(lambda: self._durable >= rnd or self._broken is not None, timeout)
            if self._durable >= rnd:
                return None
            return self._broken or f"its checkpoint was not written within {timeout:.0f} s"
