"""Run ``fedsys simulate`` as a child process for end-to-end tests, and clean up after it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class SimulateResult:
    returncode: int
    stderr: str


def run_simulate(
    args: list[str], *, env_extra: dict[str, str] | None = None, timeout: float = 300
) -> SimulateResult:
    """``fedsys simulate ARGS`` (see :func:`run_fedsys`)."""
    return run_fedsys(["simulate", *args], env_extra=env_extra, timeout=timeout)


def run_fedsys(
    args: list[str], *, env_extra: dict[str, str] | None = None, timeout: float = 300
) -> SimulateResult:
    """``fedsys ARGS`` in its own process group, killed whole afterwards.

    Ray (and a served endpoint's workers) start processes that outlive the command unless
    the group goes with it.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsys.cli", *args],
        env={**os.environ, **(env_extra or {})},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return SimulateResult(proc.returncode, stderr)


def set_args(overrides: list[str]) -> list[str]:
    """``["a=1", "b=2"]`` -> ``["--set", "a=1", "--set", "b=2"]``."""
    return [arg for item in overrides for arg in ("--set", item)]
