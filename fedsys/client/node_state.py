"""Node-local files for the client state that is too large to travel with every message.

Flower ships a node's ``context.state`` to the ClientApp and back with every message (through
Ray in simulation, to a fresh ``flwr-clientapp`` process when deployed). The error-feedback
residual is as large as the model, so it lives in files on the node instead, two slots
``<dir>/<run id>/<client id>.{a,b}.residual`` (safetensors) and ``<client id>.slot`` naming
the current one. A new residual is written over the other slot in place (its pages already
exist, see ``mapped_safetensors``), then the slot file is replaced atomically: a crash
mid-write leaves the previous residual current.

A simulation's residuals live only as long as the run, so they go to shared memory when all
of them fit (:func:`simulation_state_dir`): a 40 MB residual is read and rewritten by every
client every round, and on a disk-backed directory that write also becomes disk traffic.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from fedsys.client.mapped_safetensors import map_arrays, overwrite_arrays
from fedsys.client.residual_usage import locked_bound
from fedsys.client.state_budget import StoredState, to_evict
from fedsys.codec import Residual
from fedsys.data.cache import resolve_cache_dir
from fedsys.errors import CodecError

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def state_root(configured: Path | None) -> Path:
    """``runtime.node_state_dir``, else ``<fedsys cache>/node-state``."""
    return configured if configured is not None else resolve_cache_dir(None) / "node-state"


SHARED_MEMORY = Path("/dev/shm")
SHARED_MEMORY_SHARE = 0.25  # of its free space, at most, for one run's residuals


def simulation_state_dir(
    configured: Path | None, residual_bytes: int, shm: Path = SHARED_MEMORY
) -> Path | None:
    """The node-state directory for a simulation whose residuals total ``residual_bytes``.

    ``runtime.node_state_dir`` when set; else a directory in shared memory when the residuals
    take at most a quarter of its free space; else None (the fedsys cache, as deployed).
    """
    if configured is not None or residual_bytes <= 0:
        return configured
    try:
        usage = shutil.disk_usage(shm)
    except OSError:
        return None
    if residual_bytes > usage.free * SHARED_MEMORY_SHARE:
        return None
    return shm / "fedsys-node-state"


SLOTS = ("a", "b")


def _stem(root: Path, run_id: int, client_id: str) -> Path:
    return root / str(run_id) / _SAFE.sub("_", client_id)


def _slot_file(stem: Path, slot: str) -> Path:
    return stem.with_name(f"{stem.name}.{slot}.residual")


def _current_slot(stem: Path) -> str | None:
    try:
        slot = stem.with_name(f"{stem.name}.slot").read_text().strip()
    except OSError:
        return None
    return slot if slot in SLOTS else None


def load_residual(root: Path, run_id: int, client_id: str) -> Residual:
    """The stored residual, or zeros (``Residual()``) on the first round or if unreadable."""
    stem = _stem(root, run_id, client_id)
    slot = _current_slot(stem)
    if slot is None:
        return Residual()
    try:
        return Residual.from_arrays(map_arrays(_slot_file(stem, slot)))
    except (OSError, ValueError, CodecError):
        return Residual()


def save_residual(
    root: Path, run_id: int, client_id: str, residual: Residual, *, max_bytes: int | None = None
) -> None:
    """Write ``residual`` into the slot that is not current, then make it current.

    With ``max_bytes``, the least recently written other clients' residuals are removed
    first until this one fits (``fedsys.client.state_budget``: they restart from zero)."""
    stem = _stem(root, run_id, client_id)
    stem.parent.mkdir(parents=True, exist_ok=True)
    before = _own_bytes(stem) if max_bytes is not None else 0
    if max_bytes is not None:
        nbytes = 2 * sum(a.nbytes for a in residual.arrays.values())  # both slots
        _make_room(stem, StoredState(stem.name, nbytes, time.time()), before, max_bytes)
    target = "b" if _current_slot(stem) == "a" else "a"
    path = _slot_file(stem, target)
    arrays = {name: np.require(a, requirements="C") for name, a in residual.arrays.items()}
    if not overwrite_arrays(path, arrays):  # first write, or the layout changed
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        residual.to_file(tmp)
        os.replace(tmp, path)
    pointer = stem.with_name(f"{stem.name}.slot")
    tmp = pointer.with_name(f".{pointer.name}.{os.getpid()}.tmp")
    tmp.write_text(target)
    os.replace(tmp, pointer)
    if max_bytes is not None:
        with locked_bound(stem.parent) as bound:
            if bound.bytes is not None:
                bound.set(bound.bytes + _own_bytes(stem) - before)


def _make_room(stem: Path, incoming: StoredState, own_bytes: int, max_bytes: int) -> None:
    """Evict the least recently written other clients until ``incoming`` fits.

    The run's usage bound (``fedsys.client.residual_usage``) answers without a scan when it
    shows room; otherwise the directory is scanned (exact sizes), evicted from as needed, and
    the bound reset to what is left."""
    with locked_bound(stem.parent) as bound:
        if bound.bytes is not None and bound.bytes - own_bytes + incoming.nbytes <= max_bytes:
            return
        stored = _stored(stem.parent)
        evicted = set(to_evict(stored, incoming, max_bytes))
        for name in evicted:
            _remove(stem.parent / name)
        bound.set(sum(s.nbytes for s in stored if s.client not in evicted))


def _own_bytes(stem: Path) -> int:
    """What one client's residual slots take on disk now."""
    total = 0
    for slot in SLOTS:
        try:
            total += _slot_file(stem, slot).stat().st_size
        except OSError:
            continue
    return total


def _stored(run_dir: Path) -> list[StoredState]:
    """Every client's residual files in a run's directory: size (both slots) and when its
    slot pointer was last written."""
    found = []
    for pointer in run_dir.glob("*.slot"):
        name = pointer.name[: -len(".slot")]
        try:
            used = pointer.stat().st_mtime
            size = sum(
                f.stat().st_size for s in SLOTS if (f := _slot_file(run_dir / name, s)).exists()
            )
        except OSError:
            continue  # removed meanwhile by another worker
        found.append(StoredState(name, size, used))
    return found


def _remove(stem: Path) -> None:
    """Drop one client's residual (pointer first, so a reader sees none rather than half)."""
    for path in (stem.with_name(f"{stem.name}.slot"), *(_slot_file(stem, s) for s in SLOTS)):
        path.unlink(missing_ok=True)


def drop_run(root: Path, run_id: int) -> None:
    """Remove a finished run's node state (simulation: the server and nodes share a disk)."""
    shutil.rmtree(root / str(run_id), ignore_errors=True)
