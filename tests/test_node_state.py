"""Where nodes keep error-feedback residuals, and the process-level memory setting."""

from __future__ import annotations

import platform
import shutil
import sys
from pathlib import Path

import pytest

from fedsys.client.node_state import SHARED_MEMORY_SHARE, simulation_state_dir
from fedsys.config import build_config
from fedsys.data import load_dataset
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
    _, _, info = load_dataset(cfg.data, cfg.runtime.seed)
    chosen = _with_node_state_dir(cfg, info)
    expected = simulation_state_dir(None, 1 << 20)  # the quickstart's ten small residuals
    assert chosen.runtime.node_state_dir == expected
    assert cfg.runtime.node_state_dir is None  # the caller's config is not changed
    plain = build_config({}, ["codec.quantize=int8", "codec.error_feedback=false"])
    assert _with_node_state_dir(plain, info).runtime.node_state_dir is None
    pinned = build_config({}, ["codec.quantize=int8", f"runtime.node_state_dir={tmp_path}"])
    assert _with_node_state_dir(pinned, info).runtime.node_state_dir == tmp_path


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_keep_freed_memory_takes_effect_on_glibc() -> None:
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent
