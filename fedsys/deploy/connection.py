"""One log line per lost and regained SuperLink connection of a client daemon.

The SuperNode knows when its connection fails, but says so only in its own log, in
Flower's words: every failed attempt logs ``Connection attempt failed, retrying in …``
and the first success after failures ``Connection successful after N seconds and M
tries``; a SuperNode that (re)starts logs ``SuperNode ID: …`` once it is registered.
The daemon follows that log and turns the transitions into two events:
``superlink_lost`` and ``superlink_regained`` with ``down_s``, the seconds it was gone.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from fedsys.deploy.supervise import Child, emit

LOST_MARKS = ("Connection attempt failed",)
UP_MARKS = ("Connection successful after", "SuperNode ID:", "Received successfully")
FLOWER_SECONDS = re.compile(r"Connection successful after ([0-9.]+) seconds")
READ_LIMIT = 1 << 20  # bytes per tick at most


class ConnectionWatch:
    """Follows ``child``'s log (the SuperNode) from the supervisor's tick."""

    def __init__(self, component: str, child: Child) -> None:
        self.component = component
        self.child = child
        self.offset = 0
        self.partial = b""
        self.lost_at: float | None = None  # monotonic time of the loss
        self.lost_wall: float | None = None
        self.connected = False
        self.generation = 0

    def tick(self) -> None:
        if self.child.generation != self.generation:
            # a new start of the SuperNode appends to the same log from its own offset
            self.generation = self.child.generation
            self.offset = max(self.offset, self.child.log_offset)
            self.partial = b""
        if self.child.proc is None and self.connected:
            self._lost("supernode exited")
        for line in self._new_lines():
            if any(mark in line for mark in LOST_MARKS):
                self._lost("connection attempts failing")
            elif any(mark in line for mark in UP_MARKS):
                match = FLOWER_SECONDS.search(line)
                self._regained(float(match.group(1)) if match else None)

    def _new_lines(self) -> list[str]:
        path: Path = self.child.log_path
        try:
            size = path.stat().st_size
            if size < self.offset:  # rotated or truncated
                self.offset, self.partial = 0, b""
            if size == self.offset:
                return []
            with path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read(READ_LIMIT)
        except OSError:
            return []
        self.offset += len(data)
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines]

    def _lost(self, reason: str) -> None:
        self.connected = False
        if self.lost_at is None:
            self.lost_at, self.lost_wall = time.monotonic(), time.time()
            emit(self.component, "superlink_lost", reason=reason)

    def _regained(self, flower_seconds: float | None) -> None:
        was_lost, self.connected = self.lost_at is not None, True
        if was_lost:
            assert self.lost_at is not None
            emit(
                self.component,
                "superlink_regained",
                down_s=round(time.monotonic() - self.lost_at, 2),
                lost_at=round(self.lost_wall or 0.0, 3),
                flower_retry_s=flower_seconds,
            )
            self.lost_at = self.lost_wall = None
