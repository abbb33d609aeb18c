"""One explicit rule for overlapping round r's completion with round r+1's training.

Completing a round (central evaluation, its metrics line, publishing, its checkpoint) needs
only the new model, not the clients; with ``train.eval_overlap`` it runs while the next
round's clients train. The whole ordering contract lives here:

1. ``finish(done)``: round r has aggregated. With overlap on and a later round to come, its
   completion is *held*; otherwise it is completed at once (its ``seconds`` end when its own
   completion ends).
2. ``begin()``: round r+1 starts; returns its start time. The held round's ``seconds`` end
   there (the next round's start), whenever its completion actually runs.
3. ``during(step)``: round r+1's collection. ``step`` receives ``clients_busy``, which it calls
   once its messages are out; the held round is completed then. Whatever ``step`` does (no
   messages to send, or secure aggregation's four exchanges with nothing to overlap), the
   held round is completed before ``during`` returns: round r is always recorded and
   checkpointed before round r+1 aggregates, so metrics lines and checkpoints stay in order.
4. ``close()``: the loop ended (or a round failed): complete what is held, keeping the last
   aggregated round.

At most one round is held, and each is completed exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

Done = TypeVar("Done")
Result = TypeVar("Result")

# complete(done, next_start): next_start is when the next round began, None for "now"
Complete = Callable[[Done, float | None], None]


class Overlap(Generic[Done]):
    """Holds at most one aggregated round and completes it at the point the contract names."""

    def __init__(self, complete: Complete[Done], *, enabled: bool, last_round: int) -> None:
        self._complete = complete
        self._enabled = enabled
        self._last_round = last_round
        self._held: Done | None = None
        self._next_start: float | None = None

    def begin(self) -> float:
        """Start a round; a held round's ``seconds`` end now."""
        self._next_start = time.perf_counter()
        return self._next_start

    def during(self, step: Callable[[Callable[[], None]], Result]) -> Result:
        """Run ``step(clients_busy)``; the held round completes at ``clients_busy()`` or after."""
        result = step(self._complete_held)
        self._complete_held()
        return result

    def finish(self, rnd: int, done: Done) -> None:
        """Round ``rnd`` aggregated: hold it for the next round, or complete it now."""
        if self._enabled and rnd < self._last_round:
            self._held = done
        else:
            self._complete(done, None)

    def close(self) -> None:
        """Complete the held round, if any (the loop is over, normally or not)."""
        self._complete_held()

    def _complete_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self._complete(held, self._next_start)
