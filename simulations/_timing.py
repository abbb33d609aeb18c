"""Child-process timing shared by the benchmark drivers (``compare_flower.py``,
``bench_round_10m.py``).

Each run is a command started in its own process group (killed whole on timeout, Ray's raylet
and workers included), with its output sent to a log file. While it runs, this module polls the
run's metrics JSONL file every 10 ms to note when each round's line appears, so a round's time
is measured from outside, the same way for every run; on request it also tracks the run's
memory. ``round_stats`` turns the observed round ends into per-round and steady-state figures.

The drivers import it by name (``import _timing``): running a script puts its directory first
on ``sys.path``.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.01
RSS_POLL_SECONDS = 0.25  # driver's VmHWM (one small /proc read)
TREE_POLL_SECONDS = 1.0  # RSS summed over the process tree (walks /proc)
LOG_TAIL_CHARS = 4000


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def fedsys_command() -> list[str]:
    """The ``fedsys`` console script of this interpreter's environment, else ``-m fedsys.cli``."""
    beside = Path(sys.executable).parent / "fedsys"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("fedsys")
    return [found] if found else [sys.executable, "-m", "fedsys.cli"]


class RoundWatcher:
    """Notes when each round's line appears in a JSON-lines metrics file.

    Every run appends one line per round as soon as the round is over, so the time between
    two lines appearing is the full round period as seen from outside, measured the same way
    for all: it includes whatever a run does between rounds (fedsys writes a checkpoint
    there, which its own per-round ``seconds`` does not cover).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.arrivals: dict[int, float] = {}
        self._size = -1

    def poll(self, now: float) -> None:
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        if size == self._size:
            return
        self._size = size
        for line in self.path.read_text().splitlines(keepends=True):
            if not line.endswith("\n"):
                continue
            try:
                rnd = int(json.loads(line)["round"])
            except (ValueError, KeyError, TypeError):
                continue
            self.arrivals.setdefault(rnd, now)


# --------------------------------------------------------------------------------------------
# Memory: the driver's peak RSS and a sampled peak over its process tree (Linux /proc)
# --------------------------------------------------------------------------------------------


def _status_kib(pid: int, field: str) -> int | None:
    """A ``kB`` field (VmHWM, VmRSS) of ``/proc/<pid>/status``; None if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _tree_rss_kib(root: int) -> int | None:
    """RSS summed over ``root`` and its descendants (Linux /proc; None elsewhere)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += _status_kib(pid, "VmRSS") or 0
        stack.extend(children.get(pid, []))
    return total


class MemoryTracker:
    """Peak RSS of a run: its driver process's ``VmHWM`` (read every 0.25 s) and the RSS
    summed over the driver and all its descendants (sampled every second; shared pages are
    counted once per process that maps them)."""

    def __init__(self, start: float) -> None:
        self.driver_hwm: int | None = None
        self.tree_peak: int | None = None
        self._next_rss = self._next_tree = start

    def sample(self, pid: int, now: float) -> None:
        if now >= self._next_rss:  # VmHWM only grows: the last reading is the peak so far
            self.driver_hwm = _status_kib(pid, "VmHWM") or self.driver_hwm
            self._next_rss = now + RSS_POLL_SECONDS
        if now >= self._next_tree:
            tree = _tree_rss_kib(pid)
            if tree is not None:
                self.tree_peak = max(self.tree_peak or 0, tree)
            self._next_tree = now + TREE_POLL_SECONDS

    def report(self) -> dict[str, float | None]:
        return {
            "driver_peak_rss_mib": self.driver_hwm / 1024 if self.driver_hwm else None,
            "tree_peak_rss_mib_sampled": self.tree_peak / 1024 if self.tree_peak else None,
        }


# --------------------------------------------------------------------------------------------
# Running a child
# --------------------------------------------------------------------------------------------


def run_child(
    cmd: list[str],
    log_path: Path,
    timeout: float,
    watcher: RoundWatcher,
    track_memory: bool = False,
) -> dict[str, Any]:
    """Run ``cmd`` (from the repository root) in its own process group, output to
    ``log_path``, watching its rounds and, with ``track_memory``, its memory.

    On timeout the whole group (Ray's raylet and workers included) is killed.
    """
    load_before = os.getloadavg()
    memory: MemoryTracker | None = None
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = start + timeout
        if track_memory:
            memory = MemoryTracker(start)
        rc: int | None = None
        timed_out = False
        while rc is None:
            try:
                rc = proc.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                now = time.perf_counter()
                if now > deadline:
                    os.killpg(proc.pid, signal.SIGKILL)
                    rc = proc.wait()
                    timed_out = True
                if memory is not None:
                    memory.sample(proc.pid, now)
            watcher.poll(time.perf_counter() - start)
        wall = time.perf_counter() - start
    return {
        "returncode": rc,
        "timed_out": timed_out,
        "wall_seconds": wall,
        **(memory.report() if memory is not None else {}),
        "loadavg_1min_before": load_before[0],
        "loadavg_1min_after": os.getloadavg()[0],
    }


def run_watched(
    cmd: list[str],
    log_path: Path,
    timeout: float,
    metrics: Path,
    outputs: list[Path],
    track_memory: bool = False,
) -> tuple[dict[str, Any], dict[int, float] | None]:
    """``run_child`` watching the rounds in ``metrics``; the run succeeded if it exited 0 and
    left every file in ``outputs``.

    Returns the run's figures and when each round's line appeared; on failure, the failed
    run's entry (``ok`` false, the log's tail) and None.
    """
    watcher = RoundWatcher(metrics)
    run = run_child(cmd, log_path, timeout, watcher, track_memory)
    if run["returncode"] != 0 or not all(path.exists() for path in outputs):
        return {"ok": False, **run, "log_tail": tail(log_path)}, None
    return run, watcher.arrivals


def save_report(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def failure_reason(result: dict[str, Any], timeout: float) -> str:
    """Why a run from ``run_child`` failed, in a few words."""
    if result["timed_out"]:
        return f"timed out after {timeout:.0f} s"
    return f"exit status {result['returncode']}"


def tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return ""


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def round_stats(
    rows: list[dict[str, Any]], arrivals: dict[int, float], all_rounds: bool = False
) -> dict[str, Any]:
    """Per-round periods seen from outside, and the run's own per-round ``seconds``.

    Round r's observed period is the time from round r-1's line to round r's; round 1 has no
    predecessor, so its own reported seconds stand in for it. 'Steady' means rounds 2..R (all
    rounds if there is only one). ``all_rounds`` adds the means over every round as well.
    """
    rows = sorted(rows, key=lambda r: int(r["round"]))
    reported = [float(r["seconds"]) for r in rows]
    rounds = [int(r["round"]) for r in rows]
    periods = [reported[0]]
    for i, (prev, cur) in enumerate(itertools.pairwise(rounds), start=1):
        if prev in arrivals and cur in arrivals:
            periods.append(arrivals[cur] - arrivals[prev])
        else:  # a line the watcher did not see (only if the file was rewritten)
            periods.append(reported[i])
    steady = periods[1:] or periods
    stats: dict[str, Any] = {
        "rounds": len(rows),
        "seconds_per_round_steady": statistics.fmean(steady),
        "median_seconds_per_round_steady": statistics.median(steady),
        "min_seconds_per_round_steady": min(steady),
        "max_seconds_per_round_steady": max(steady),
    }
    if all_rounds:
        stats["seconds_per_round"] = statistics.fmean(periods)
    stats["first_round_seconds"] = reported[0]
    stats["reported_seconds_per_round_steady"] = statistics.fmean(reported[1:] or reported)
    if all_rounds:
        stats["reported_seconds_per_round"] = statistics.fmean(reported)
    stats["round_seconds"] = periods
    stats["reported_round_seconds"] = reported
    return stats


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "flwr": _version("flwr"),
        "ray": _version("ray"),
        "fedsys": _version("fedsys"),
    }
