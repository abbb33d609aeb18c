"""A virtual clock for simulated client speeds: who finishes next, and when.

Each dispatched task finishes at ``start + duration`` in simulated seconds (the client's
slowdown times the fastest client's task time, ``fedsys.population.speed``). The server takes
replies in the order of these finish times, not in the order Ray happens to deliver them, so
an asynchronous run is the same for a seed however the machine schedules the work, and its
simulated wall clock says how long the run would take on such devices. Ties break on the
client's stable key.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class InFlight:
    """One dispatched task; ordered by when it finishes, then by the client's key."""

    finish: float
    client: int
    version: int = field(compare=False)  # the server version the client downloaded
    start: float = field(compare=False)


@dataclass
class VirtualClock:
    """Simulated time and the tasks in flight (a heap by finish time)."""

    now: float = 0.0
    _heap: list[InFlight] = field(default_factory=list)

    def start(self, client: int, version: int, duration: float) -> InFlight:
        task = InFlight(self.now + duration, client, version, self.now)
        heapq.heappush(self._heap, task)
        return task

    def peek(self) -> InFlight | None:
        return self._heap[0] if self._heap else None

    def pop(self) -> InFlight:
        """The next task to finish; the clock moves to its finish time."""
        task = heapq.heappop(self._heap)
        self.now = max(self.now, task.finish)
        return task

    def busy(self) -> set[int]:
        return {t.client for t in self._heap}

    def __len__(self) -> int:
        return len(self._heap)

    def advance_to(self, t: float) -> None:
        self.now = max(self.now, t)
