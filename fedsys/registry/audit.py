"""The registry's audit trail: one JSON object per line for each publish, activation,
rollback and refused request.

Lines are appended with a single ``write`` on a file opened with ``O_APPEND``, so several
endpoint workers (processes) and the publisher can share one log without interleaving.
Callers pass facts only (model, version, reason, client address); never tokens or keys.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("fedsys")


class AuditLog:
    """Append-only JSON-lines log; a failed write is logged, never raised to the caller."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def record(self, event: str, **fields: Any) -> None:
        """Append ``{"ts": ..., "event": event, **fields}`` as one line."""
        entry = {"ts": datetime.now(UTC).isoformat(), "event": event, **fields}
        line = (json.dumps(entry, default=str, sort_keys=False) + "\n").encode()
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
            except OSError as exc:
                log.warning("audit log %s: cannot record %s event: %s", self.path, event, exc)

    def read(self) -> list[dict[str, Any]]:
        """Every entry so far (for tests and tooling); unreadable lines are skipped."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out: list[dict[str, Any]] = []
        for raw in text.splitlines():
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out
