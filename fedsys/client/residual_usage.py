"""An upper bound on the bytes a run's residuals take, kept beside them, so the residual budget
(``fedsys.client.state_budget``) needs no directory scan while the budget is far from full.

Without it every save listed and stat-ed every stored client's files to add up their sizes
(half a second with 10,000 clients stored), so with error feedback a client's time grew with
the population rather than with the clients sampled. The bound lives in one small file per run
(``<dir>/<run id>/.residual-bytes``), read and rewritten under an exclusive ``flock`` (several
simulation workers save at once); whoever scans the directory resets it to the exact total.

It only ever errs high (a save adds what it wrote, measured on disk), except in a race with
an eviction or a crash between a write and its update (at most one client's residual): when
the bound says a new residual fits, the exact sum says so too, so the clients evicted are the
same as with a scan on every save; when it does not, the caller scans as before.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

USAGE_FILE = ".residual-bytes"


class UsageBound:
    """The bound, open and locked: ``bytes`` (None if missing or unreadable) and ``set``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        raw = os.pread(fd, 64, 0)
        try:
            value = int(raw.decode().strip())
        except (UnicodeDecodeError, ValueError):
            value = -1
        self.bytes: int | None = value if value >= 0 else None

    def set(self, nbytes: int) -> None:
        data = f"{max(nbytes, 0)}\n".encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        self.bytes = max(nbytes, 0)


@contextmanager
def locked_bound(run_dir: Path) -> Iterator[UsageBound]:
    """The run's bound under an exclusive lock (held for the ``with`` block only)."""
    fd = os.open(run_dir / USAGE_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield UsageBound(fd)
    finally:
        os.close(fd)  # closing releases the lock
