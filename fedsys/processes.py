"""Process helpers shared by the daemons and the client-side processes they start.

Finding Flower's entry points, the environment children get, tying a child's life to its
parent, recording SIGTERM/SIGINT for loops that stop between steps, and the one-JSON-line
log format. A leaf module (standard library only): ``fedsys.deploy`` (the daemons) and
``fedsys.client`` (the warm trainer, the task runner) both use it without importing each other.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TextIO

PR_SET_PDEATHSIG = 1
# SuperExec polls its SuperNode for new ClientApp tasks every second by default: a tenth of
# that takes most of the idle wait out of every round at a negligible CPU cost.
TASK_POLL_INTERVAL = "0.1"


def find_executable(name: str) -> str:
    """An entry point installed next to this interpreter (venvs are often not on PATH)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def child_env() -> dict[str, str]:
    """This process's environment for a Flower child: this interpreter's bin directory first
    on PATH, telemetry and update checks off, and quick task polling."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    env.setdefault("FLWR_SUPEREXEC_TASK_POLL_INTERVAL", TASK_POLL_INTERVAL)
    return env


def parent_death_signal(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive ``signum`` when its parent dies.

    The signal is tied to the forking *thread*; supervisors start children from their main
    thread. A parent that died between fork and prctl is caught by the ppid check.
    """
    parent = os.getpid()
    return lambda: die_with_parent(parent, signum)


def die_with_parent(parent: int, signum: int = signal.SIGTERM) -> None:
    """In a freshly forked child of ``parent``: receive ``signum`` when the parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signum)


class StopRequest:
    """SIGTERM or SIGINT recorded (not raised) once :meth:`install` ran: for loops that
    finish their current step and then check ``signum``."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def install(self) -> StopRequest:
        signal.signal(signal.SIGTERM, self._record)
        signal.signal(signal.SIGINT, self._record)
        return self

    def _record(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum


def log_line(stream: TextIO, component: str, event: str, **fields: object) -> None:
    """One structured log line (``ts``, ``component``, ``event``, fields) on ``stream``;
    callers never pass key material."""
    line = {"ts": round(time.time(), 3), "component": component, "event": event, **fields}
    stream.write(json.dumps(line, default=str) + "\n")
    stream.flush()


__all__ = [
    "StopRequest",
    "child_env",
    "die_with_parent",
    "find_executable",
    "log_line",
    "parent_death_signal",
]
