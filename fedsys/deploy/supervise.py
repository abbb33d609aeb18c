"""Keep a daemon's child processes running: restart with backoff, stop cleanly on SIGTERM.

Every decision is logged as one JSON line on stdout (``ts``, ``component``, ``event`` and the
event's fields), so ``journalctl -o cat`` or ``docker logs`` can be filtered with ``jq``.
Children write their own output to files under the daemon's log directory.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedsys.deploy.lifetime import Lifetime, terminate
from fedsys.deploy.settings import Backoff
from fedsys.processes import StopRequest, log_line, parent_death_signal

POLL = 0.2  # seconds between checks of the children
REFUSED_EXIT = 305  # flower-supernode: the SuperLink refused this node (unregistered key)
# flower-supernode 1.41 logs that code but, failing inside its web server's start-up, exits
# with 1: the log written since the start is the reliable signal.
REFUSED_MARK = b"Exit Code: 305"


def emit(component: str, event: str, **fields: object) -> None:
    """One structured log line on stdout; callers never pass key material."""
    log_line(sys.stdout, component, event, **fields)


@dataclass
class Child:
    """A supervised command and its restart state."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = 0.0
    restart_at: float | None = None
    refusals: int = 0
    restarts: int = field(default=0)
    restart: bool = True  # False: its exit ends the daemon (exit code 1)
    restart_limit: int | None = None  # give up after this many quick restarts in a row
    log_offset: int = 0
    generation: int = 0  # how many times it was started
    streak: int = 0  # restarts since it last ran for backoff.reset_after seconds

    @property
    def tag(self) -> str:
        """Marks this start's processes, Flower's detached ones included (see lifetime)."""
        return f"{self.name}#{self.generation}"

    def start(self, component: str, lifetime: Lifetime | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.generation += 1
        env = lifetime.env(self.env, self.tag) if lifetime is not None else self.env
        with self.log_path.open("ab") as log:
            self.log_offset = log.tell()
            self.proc = subprocess.Popen(
                self.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a unit
                preexec_fn=parent_death_signal(),  # and it dies with the daemon
            )
        self.started = time.monotonic()
        self.restart_at = None
        emit(component, "child_started", child=self.name, pid=self.proc.pid)

    def was_refused(self, code: int) -> bool:
        """Did the SuperLink refuse this run of the child (see REFUSED_MARK)?"""
        if code == REFUSED_EXIT:
            return True
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                return REFUSED_MARK in log.read(1 << 20)
        except OSError:
            return False

    def stop(self, timeout: float) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL the child's whole process group."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers it started (e.g. flwr-clientapp)
        return proc.returncode


class Supervisor:
    """Runs children until SIGTERM/SIGINT, or until the SuperNode is refused too often."""

    def __init__(
        self,
        component: str,
        children: list[Child],
        backoff: Backoff,
        *,
        stop_timeout: float = 20.0,
        refused_limit: int = 3,
        on_tick: Callable[[], None] | None = None,
        lifetime: Lifetime | None = None,
    ) -> None:
        self.component = component
        self.lifetime = lifetime
        self.children = children
        self.backoff = backoff
        self.stop_timeout = stop_timeout
        self.refused_limit = refused_limit
        self.on_tick = on_tick
        self._stop = StopRequest()
        self._stop_code: int | None = None

    @property
    def stopping(self) -> bool:
        """A stop was requested (signal or :meth:`finish`): long waits should end."""
        return self._stop.signum is not None or self._stop_code is not None

    def finish(self, code: int) -> None:
        """Stop the children and make :meth:`run` return ``code`` (from ``on_tick``)."""
        self._stop_code = code

    def _exited(self, child: Child, code: int) -> bool:
        """Schedule a restart; False when the daemon should give up."""
        ran = time.monotonic() - child.started
        emit(self.component, "child_exited", child=child.name, code=code, ran_s=round(ran, 1))
        child.proc = None
        self._sweep(child.tag)
        if not child.restart:
            return False
        child.streak = 0 if ran >= self.backoff.reset_after else child.streak + 1
        if child.restart_limit is not None and child.streak > child.restart_limit:
            emit(self.component, "restart_limit", child=child.name, limit=child.restart_limit)
            return False
        if child.was_refused(code):
            child.refusals += 1
            emit(self.component, "supernode_refused", child=child.name, count=child.refusals)
            if child.refusals >= self.refused_limit:
                return False
        else:
            child.refusals = 0
        if ran >= self.backoff.reset_after or child.delay == 0:
            child.delay = self.backoff.initial
        else:
            child.delay = min(child.delay * 2, self.backoff.max)
        child.restart_at = time.monotonic() + child.delay
        child.restarts += 1
        emit(self.component, "restart_scheduled", child=child.name, delay_s=child.delay)
        return True

    def run(self) -> int:
        """0 after a clean stop, 3 when the SuperLink keeps refusing this node, 1 when a
        child that must not be restarted exits, else what :meth:`finish` was given."""
        self._stop.install()
        code = 0
        try:
            for child in self.children:
                child.start(self.component, self.lifetime)
            while self._stop.signum is None:
                now = time.monotonic()
                for child in self.children:
                    if child.proc is not None and (rc := child.proc.poll()) is not None:
                        if not self._exited(child, rc):
                            code = 3 if child.refusals else 1
                            reason = "refused by the SuperLink" if code == 3 else "child exited"
                            emit(self.component, "giving_up", child=child.name, reason=reason)
                            return code
                    elif (
                        child.proc is None
                        and child.restart_at is not None
                        and (now >= child.restart_at)
                    ):
                        child.start(self.component, self.lifetime)
                if self.on_tick is not None:
                    self.on_tick()
                if self._stop_code is not None:
                    return self._stop_code
                time.sleep(POLL)
            emit(self.component, "stopping", signal=signal.Signals(self._stop.signum).name)
            return code
        finally:
            for child in reversed(self.children):
                rc = child.stop(self.stop_timeout)
                if rc is not None:
                    emit(self.component, "child_stopped", child=child.name, code=rc)
            self._sweep(None)
            emit(self.component, "stopped", code=self._stop_code or code)

    def _sweep(self, tag: str | None) -> None:
        """Stop what a child (``tag``) or, with None, any child left behind: Flower runs
        some processes detached (SuperExec, the ServerApp), so they outlive a dead parent
        for as long as their own parent monitors take, or forever when those hang."""
        if self.lifetime is None:
            return
        left = self.lifetime.descendants(tag)
        if left:
            terminate(left, self.stop_timeout)
            emit(
                self.component,
                "leftovers_stopped",
                of=tag or "all",
                processes=[f"{p.pid}:{p.name}" for p in left],
            )
