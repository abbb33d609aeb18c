"""Test-only crash hook, loaded by Python at start-up from ``PYTHONPATH`` (see ``fault_env``).

With ``FEDSYS_FAULT_KILL_AFTER_ROUND=N`` set, the process dies like ``kill -9`` as soon as
round N's checkpoint is on disk (its metrics line is already written), so the crash-resume
tests can check what a real crash leaves behind. Nothing is imported or patched unless the
variable is set, and nothing in ``fedsys`` knows about this hook: it wraps
``fedsys.server.checkpointer.Checkpointer.write`` when that module is first imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import signal
import sys
from types import ModuleType
from typing import Any

FAULT_ENV = "FEDSYS_FAULT_KILL_AFTER_ROUND"
TARGET = "fedsys.server.checkpointer"


def _patch(module: ModuleType, kill_after: int) -> None:
    checkpointer = module.Checkpointer
    write = checkpointer.write

    def write_then_maybe_die(self: Any, ckpt: Any) -> None:
        write(self, ckpt)
        self.wait()  # the round is durable: what a resume continues from
        if ckpt.round == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    checkpointer.write = write_then_maybe_die


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds ``TARGET`` with the normal finders, then patches it right after it executes."""

    def __init__(self, kill_after: int) -> None:
        self.kill_after = kill_after

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        loader, kill_after = spec.loader, self.kill_after
        exec_module = loader.exec_module  # type: ignore[attr-defined]

        def exec_and_patch(module: ModuleType) -> None:
            exec_module(module)
            _patch(module, kill_after)

        loader.exec_module = exec_and_patch  # type: ignore[attr-defined]
        return spec


if target := os.environ.get(FAULT_ENV):
    sys.meta_path.insert(0, _PatchOnImport(int(target)))
