"""Processes a daemon starts live and die with it, and one daemon owns a state directory.

Flower detaches what it starts (the SuperLink runs SuperExec in a session of its own, which
runs the ServerApp), so a process group or a plain parent/child link does not reach the
whole tree. Three mechanisms together do:

- every direct child gets a parent-death signal (``prctl(PR_SET_PDEATHSIG)``, see
  :mod:`fedsys.processes`): the daemon's death, even by SIGKILL, stops its SuperLink or
  SuperNode, and Flower's own parent monitors (SuperExec watches the SuperLink, the
  ServerApp watches SuperExec) take the rest down;
- every process the daemon starts, and every process those start, carries two environment
  markers (the state directory and this daemon instance's id, plus which child started it),
  so the daemon can find its whole tree in ``/proc`` whatever session Flower put it in;
- the daemon holds an exclusive ``flock`` on ``<state_dir>/daemon.lock``: a second daemon on
  the same state directory is refused, and a daemon that gets the lock stops what an earlier,
  dead instance left behind (found by the markers) before it starts anything.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fedsys.errors import FedsysError

STATE_ENV = "FEDSYS_DAEMON_STATE"  # the daemon's state directory (absolute)
INSTANCE_ENV = "FEDSYS_DAEMON_INSTANCE"  # one id per daemon start
CHILD_ENV = "FEDSYS_DAEMON_CHILD"  # which child (and which start of it) a process descends from
LOCK_FILE = "daemon.lock"


class DaemonConflict(FedsysError):
    """Another live daemon owns the state directory, or something else holds our port."""


@dataclass(frozen=True)
class Proc:
    """A live process that carries our markers."""

    pid: int
    name: str
    instance: str
    child: str


def _environ(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None  # gone, or another user's
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key in (STATE_ENV.encode(), INSTANCE_ENV.encode(), CHILD_ENV.encode()):
            out[key.decode()] = value.decode(errors="replace")
    return out


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].startswith("Z")


def marked_processes(state_dir: Path) -> list[Proc]:
    """Live processes (of this user) started from a daemon on ``state_dir``."""
    me = os.getpid()
    wanted = str(state_dir.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        env = _environ(int(entry.name))
        if not env or env.get(STATE_ENV) != wanted or _is_zombie(int(entry.name)):
            continue
        found.append(
            Proc(
                int(entry.name),
                _name(int(entry.name)),
                env.get(INSTANCE_ENV, ""),
                env.get(CHILD_ENV, ""),
            )
        )
    return found


def terminate(procs: Iterable[Proc], grace: float) -> list[Proc]:
    """SIGTERM ``procs``, wait up to ``grace`` seconds, SIGKILL the rest; returns them all."""
    procs = list(procs)
    for p in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = procs
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        _reap()
        alive = [p for p in alive if _alive(p.pid)]
    for p in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGKILL)
    while alive and time.monotonic() < deadline + 5.0:
        time.sleep(0.05)
        _reap()
        alive = [p for p in alive if _alive(p.pid)]
    return procs


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _reap() -> None:
    """Collect exited children of ours (orphans re-parented to us, if any)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


class Lifetime:
    """The daemon's claim on its state directory and the markers its children carry."""

    def __init__(self, state_dir: Path, component: str) -> None:
        self.state_dir = state_dir.resolve()
        self.component = component
        self.instance = f"{component}-{uuid.uuid4().hex[:12]}"
        self._lock: IO[str] | None = None

    def acquire(self) -> dict[str, object]:
        """Take ``daemon.lock``; DaemonConflict when a live daemon holds it.

        Returns what the lock file said about the previous holder (empty if none).
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.state_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held for the daemon's life)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise DaemonConflict(
                    f"another fedsys {self.component} is running on state_dir {self.state_dir} "
                    f"({holder or 'holder unknown'}); stop it first"
                ) from None
            raise
        fh.seek(0)
        try:
            previous = json.loads(fh.read() or "{}")
        except ValueError:
            previous = {}
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "instance": self.instance}) + "\n")
        fh.flush()
        self._lock = fh
        return previous if isinstance(previous, dict) else {}

    def release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def env(self, base: dict[str, str], child: str) -> dict[str, str]:
        """``base`` plus the markers for a process started as ``child``."""
        return {
            **base,
            STATE_ENV: str(self.state_dir),
            INSTANCE_ENV: self.instance,
            CHILD_ENV: child,
        }

    def stale(self) -> list[Proc]:
        """Processes an earlier instance on this state directory left running."""
        return [p for p in marked_processes(self.state_dir) if p.instance != self.instance]

    def descendants(self, child: str | None = None) -> list[Proc]:
        """This instance's processes (of one child start, when given)."""
        return [
            p
            for p in marked_processes(self.state_dir)
            if p.instance == self.instance and (child is None or p.child == child)
        ]


def port_holders(port: int) -> list[int]:
    """Pids (readable to this user) with a TCP socket listening on ``port`` (Linux)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    if not inodes:
        return []
    wanted = {f"socket:[{i}]" for i in inodes}
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        pids.append(int(entry.name))
                        break
    return pids


def check_port_free(host: str, port: int) -> None:
    """DaemonConflict naming the holder when ``host:port`` cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            holders = ", ".join(f"pid {p} ({_name(p)})" for p in port_holders(port))
            raise DaemonConflict(
                f"port {port} on {host} is already in use by {holders or 'another process'}; "
                "it is not a SuperLink this daemon started, so it will not be used"
            ) from None


def claim(state_dir: Path, component: str, grace: float, report: Callable[..., None]) -> Lifetime:
    """Own ``state_dir`` for ``component`` (refusing a second live daemon) and stop whatever
    an earlier instance of it left running; ``report(component, event, **fields)`` logs it."""
    lifetime = Lifetime(state_dir, component)
    previous = lifetime.acquire()
    stale = lifetime.stale()
    if stale:
        report(
            component,
            "stale_processes",
            previous_instance=previous.get("instance"),
            processes=[f"{p.pid}:{p.name}" for p in stale],
            action="stopping",
        )
        terminate(stale, grace=grace)
    return lifetime
