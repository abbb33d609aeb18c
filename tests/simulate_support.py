"""Run ``fedsys simulate`` as a child process for end-to-end tests, and clean up after it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Small but real: FedAdam (stateful server), half the clients sampled per round (seeded
# sampling matters), a narrow CNN so four rounds take seconds.
TINY = [
    "name=tiny",
    "data.num_partitions=4",
    "model.channels=8",
    "train.rounds=4",
    "train.batch_size=64",
    "strategy.name=fedadam",
    "strategy.fraction_train=0.5",
    "strategy.min_train_nodes=2",
    "runtime.progress=false",
    "runtime.seed=3",
]
# The fast suite's one simulation (the ``tiny_run`` fixture), shared by the tests of outputs,
# publishing, serving and first use: TINY, publishing every round, served beside the run.
# Publishing and serving do not change training, so TINY runs compare against it.
TINY_SERVED = [*TINY, "publish.mode=every_round", "serve.enabled=true"]


@dataclass(frozen=True)
class SimulateResult:
    returncode: int
    stderr: str
    stdout: str = ""


@dataclass(frozen=True)
class Run:
    """A finished ``fedsys simulate``: its output directory and what it printed."""

    out: Path
    result: SimulateResult


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
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return SimulateResult(proc.returncode, stderr, stdout)


def set_args(overrides: list[str]) -> list[str]:
    """``["a=1", "b=2"]`` -> ``["--set", "a=1", "--set", "b=2"]``."""
    return [arg for item in overrides for arg in ("--set", item)]


FAULT_HOOK_DIR = Path(__file__).parent / "fault_hook"


def kill_after_round(rnd: int) -> dict[str, str]:
    """Environment for a child ``fedsys`` that dies like ``kill -9`` once round ``rnd`` is
    checkpointed (``fault_hook/sitecustomize.py``, which Python loads from PYTHONPATH)."""
    path = os.pathsep.join(p for p in (str(FAULT_HOOK_DIR), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "FEDSYS_FAULT_KILL_AFTER_ROUND": str(rnd)}
