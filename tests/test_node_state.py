"""Where nodes keep error-feedback residuals, and the process-level memory setting."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedsys.client.node_state import (
    SHARED_MEMORY_SHARE,
    load_residual,
    save_residual,
    simulation_state_dir,
)
from fedsys.codec import Residual
from fedsys.config import build_config
from fedsys.memory import keep_freed_memory
from fedsys.simulation import _with_node_state_dir


def test_configured_directory_always_wins(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    assert simulation_state_dir(mine, 10**15, shm=tmp_path) == mine


def test_residuals_go_to_shared_memory_only_when_they_fit(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    fits = int(free * SHARED_MEMORY_SHARE) - 1
    assert simulation_state_dir(None, fits, shm=tmp_path) == tmp_path / "fedsys-node-state"
    assert simulation_state_dir(None, int(free * SHARED_MEMORY_SHARE) * 2, shm=tmp_path) is None
    assert simulation_state_dir(None, 1, shm=tmp_path / "absent") is None
    assert simulation_state_dir(None, 0, shm=tmp_path) is None  # nothing to keep


def test_simulation_chooses_once_and_only_with_error_feedback(tmp_path: Path) -> None:
    cfg = build_config({}, ["codec.quantize=int8"])
    chosen = _with_node_state_dir(cfg)
    expected = simulation_state_dir(None, 1 << 20)  # the quickstart's ten small residuals
    assert chosen.runtime.node_state_dir == expected
    assert cfg.runtime.node_state_dir is None  # the caller's config is not changed
    plain = build_config({}, ["codec.quantize=int8", "codec.error_feedback=false"])
    assert _with_node_state_dir(plain).runtime.node_state_dir is None
    pinned = build_config({}, ["codec.quantize=int8", f"runtime.node_state_dir={tmp_path}"])
    assert _with_node_state_dir(pinned).runtime.node_state_dir == tmp_path


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_keep_freed_memory_takes_effect_on_glibc() -> None:
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent


def _residual(seed: int, shape: tuple[int, ...] = (3, 5)) -> Residual:
    rng = np.random.default_rng(seed)
    return Residual(
        {
            "w": rng.standard_normal(shape).astype(np.float32),
            "b": rng.standard_normal(shape[:1]).astype(np.float32),
        }
    )


def test_residual_slots_alternate_and_the_latest_is_read(tmp_path: Path) -> None:
    assert load_residual(tmp_path, 7, "node/1").arrays == {}  # nothing yet: zeros
    for seed in range(4):
        save_residual(tmp_path, 7, "node/1", _residual(seed))
        got = load_residual(tmp_path, 7, "node/1")
        for name, arr in _residual(seed).arrays.items():
            np.testing.assert_array_equal(got.arrays[name], arr)
    names = sorted(p.name for p in (tmp_path / "7").iterdir())
    assert names == ["node_1.a.residual", "node_1.b.residual", "node_1.slot"]
    # the file holds plain safetensors: the library reads what was written in place
    current = (tmp_path / "7" / "node_1.slot").read_text()
    stored = load_file(tmp_path / "7" / f"node_1.{current}.residual")
    np.testing.assert_array_equal(stored["w"], _residual(3).arrays["w"])


def test_a_reader_never_sees_a_half_written_residual(tmp_path: Path) -> None:
    save_residual(tmp_path, 1, "c", _residual(0))
    save_residual(tmp_path, 1, "c", _residual(1))
    held = load_residual(tmp_path, 1, "c")  # maps the current slot
    save_residual(tmp_path, 1, "c", _residual(2))  # writes the other slot
    np.testing.assert_array_equal(held.arrays["w"], _residual(1).arrays["w"])
    with pytest.raises(ValueError, match="read-only"):
        held.arrays["w"][0, 0] = 99.0  # a mapping of the file: nobody writes through it
    latest = load_residual(tmp_path, 1, "c").arrays["w"]
    np.testing.assert_array_equal(latest, _residual(2).arrays["w"])


def test_a_changed_layout_or_a_damaged_slot_is_handled(tmp_path: Path) -> None:
    save_residual(tmp_path, 1, "c", _residual(0))
    save_residual(tmp_path, 1, "c", _residual(1))
    save_residual(tmp_path, 1, "c", _residual(2, shape=(4, 6)))  # new shapes: fresh file
    assert load_residual(tmp_path, 1, "c").arrays["w"].shape == (4, 6)
    current = (tmp_path / "1" / "c.slot").read_text()
    (tmp_path / "1" / f"c.{current}.residual").write_bytes(b"\x05" + b"\x00" * 30)
    assert load_residual(tmp_path, 1, "c").arrays == {}  # error feedback restarts from zeros
    (tmp_path / "1" / "c.slot").write_text("z")
    assert load_residual(tmp_path, 1, "c").arrays == {}


def test_residual_budget_evicts_the_least_recently_written(tmp_path: Path) -> None:
    """Over the budget, the oldest clients' residuals go; the one written stays whole."""
    import os

    one = Residual.from_arrays({"w": np.ones(256, dtype=np.float32)})  # 1 KiB, 2 KiB per client
    for i, name in enumerate(["a", "b", "c"]):
        save_residual(tmp_path, 1, name, one, max_bytes=4096)
        pointer = tmp_path / "1" / f"{name}.slot"
        os.utime(pointer, (1000 + i, 1000 + i))  # a deterministic order of use
    assert load_residual(tmp_path, 1, "a").arrays == {}  # evicted for "c"
    np.testing.assert_array_equal(load_residual(tmp_path, 1, "c").arrays["w"], one.arrays["w"])
    np.testing.assert_array_equal(load_residual(tmp_path, 1, "b").arrays["w"], one.arrays["w"])


def test_residual_budget_scans_the_directory_only_when_the_bound_shows_no_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Far from the budget a save costs the same whatever the clients stored (no scan); the
    run's bound stays the exact bytes on disk; over it, the scan evicts as before."""
    from fedsys.client import node_state
    from fedsys.client.residual_usage import USAGE_FILE

    scans = []
    real = node_state._stored
    monkeypatch.setattr(node_state, "_stored", lambda d: scans.append(d) or real(d))
    one = Residual.from_arrays({"w": np.ones(256, dtype=np.float32)})
    for i in range(12):
        save_residual(tmp_path, 1, f"c{i}", one, max_bytes=1 << 20)
        save_residual(tmp_path, 1, f"c{i}", one, max_bytes=1 << 20)  # both slots now
        os.utime(tmp_path / "1" / f"c{i}.slot", (1000 + i, 1000 + i))  # order of use
    assert len(scans) == 1  # the first save, before the run had a bound
    run = tmp_path / "1"
    on_disk = sum(p.stat().st_size for p in run.glob("*.residual"))
    assert int((run / USAGE_FILE).read_text()) == on_disk
    save_residual(tmp_path, 1, "big", one, max_bytes=on_disk)  # no room: scan and evict
    assert len(scans) == 2
    assert load_residual(tmp_path, 1, "c0").arrays == {}  # the least recently written went
