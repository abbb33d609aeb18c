"""Checkpoints: atomic single-file round trip, and strategy state survives export/import."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import FedAdam, FedAvgM

from fedsys.config import DPConfig, StrategyConfig, TrainConfig
from fedsys.errors import CheckpointError
from fedsys.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from fedsys.server.strategies import build_strategy
from fedsys.server.strategy_state import export_state, import_state


def test_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    gen_state = dict(rng.bit_generator.state)
    ckpt = Checkpoint(
        round=7,
        model={"w": rng.normal(size=(3, 4)).astype(np.float32), "n": np.array(5, dtype=np.int64)},
        strategy_arrays={"m_t/w": np.ones((3, 4), dtype=np.float32)},
        strategy_state={"m_t": {"kind": "dict", "keys": ["w"]}},
        rng_state=gen_state,
        extra={"wall_seconds": 1.5},
    )
    save_checkpoint(tmp_path, ckpt)
    back = load_checkpoint(tmp_path)
    assert back.round == 7
    np.testing.assert_array_equal(back.model["w"], ckpt.model["w"])
    assert back.model["n"].dtype == np.int64 and back.model["n"].shape == ()  # 0-d stays 0-d
    np.testing.assert_array_equal(back.strategy_arrays["m_t/w"], 1.0)
    assert back.rng_state == gen_state
    assert back.extra == {"wall_seconds": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.safetensors"]


def test_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path)


def _arrays(value: float) -> dict[str, np.ndarray]:
    return {"a": np.full((2, 2), value, dtype=np.float32), "b": np.full(3, value, np.float32)}


def test_fedadam_state_round_trip() -> None:
    strategy = FedAdam()
    strategy.m_t = _arrays(0.25)
    strategy.v_t = _arrays(0.5)
    strategy.current_arrays = _arrays(1.0)
    arrays, desc = export_state(strategy)
    fresh = FedAdam()
    assert fresh.m_t is None
    import_state(fresh, arrays, desc)
    assert fresh.m_t is not None and fresh.v_t is not None
    np.testing.assert_array_equal(fresh.m_t["a"], 0.25)
    np.testing.assert_array_equal(fresh.v_t["b"], 0.5)


def test_fedavgm_momentum_list_and_arrayrecord() -> None:
    strategy = FedAvgM(server_momentum=0.9)
    strategy.momentum_vector = [np.ones(2, np.float32), np.zeros((1, 3), np.float32)]
    strategy.current_arrays = ArrayRecord({"x": Array(np.arange(4, dtype=np.float32))})
    arrays, desc = export_state(strategy)
    fresh = FedAvgM(server_momentum=0.9)
    import_state(fresh, arrays, desc)
    assert fresh.momentum_vector is not None
    np.testing.assert_array_equal(fresh.momentum_vector[0], 1.0)
    assert fresh.current_arrays is not None
    np.testing.assert_array_equal(fresh.current_arrays["x"].numpy(), np.arange(4))


def test_dp_wrapper_state_is_nested() -> None:
    cfg = StrategyConfig(
        name="fedadam", dp=DPConfig(kind="adaptive", clipping_norm=2.0, noise_multiplier=0.1)
    )
    strategy = build_strategy(cfg, TrainConfig(), num_clients=10)
    strategy.clipping_norm = 0.75  # type: ignore[attr-defined]
    strategy.strategy.m_t = _arrays(3.0)  # type: ignore[attr-defined]
    arrays, desc = export_state(strategy)
    fresh = build_strategy(cfg, TrainConfig(), num_clients=10)
    import_state(fresh, arrays, desc)
    assert fresh.clipping_norm == 0.75  # type: ignore[attr-defined]
    np.testing.assert_array_equal(fresh.strategy.m_t["a"], 3.0)  # type: ignore[attr-defined]
