"""The simulated population: speeds, availability, dropout and sampling by stable key are
pure functions of the seed, independent of which other clients exist or their order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsys.client.state_budget import StoredState, budget_bytes, to_evict
from fedsys.errors import ConfigError
from fedsys.population import Availability, dropped_out, sample_keys, slowdown
from fedsys.scale_config import AvailabilityConfig, SpeedConfig


def test_two_point_speeds_are_per_client_and_seeded() -> None:
    cfg = SpeedConfig(distribution="two_point", slow_fraction=0.3, slow_factor=10.0)
    speeds = [slowdown(cfg, 0, k) for k in range(2000)]
    assert set(speeds) == {1.0, 10.0}
    assert 0.25 < speeds.count(10.0) / len(speeds) < 0.35
    assert speeds == [slowdown(cfg, 0, k) for k in range(2000)]
    assert speeds != [slowdown(cfg, 1, k) for k in range(2000)]
    assert slowdown(SpeedConfig(), 0, 5) == 1.0


def test_heavy_tailed_speeds_are_capped() -> None:
    cfg = SpeedConfig(distribution="pareto", alpha=0.8, max_factor=50.0)
    speeds = np.array([slowdown(cfg, 3, k) for k in range(3000)])
    assert speeds.min() >= 1.0 and speeds.max() == 50.0
    assert np.median(speeds) < 3.0  # most clients are fast, a few very slow


def test_probability_availability_does_not_depend_on_other_clients() -> None:
    avail = Availability(AvailabilityConfig(model="probability", online=0.5), seed=1)
    keys = np.arange(1000, dtype=np.int64)
    mask = avail.online(3, keys)
    assert 0.4 < mask.mean() < 0.6
    subset = keys[::7]
    np.testing.assert_array_equal(avail.online(3, subset), mask[::7])
    assert not np.array_equal(avail.online(4, keys), mask)


def test_trace_availability(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("key,pattern\n0,10\n2,011\n")
    avail = Availability(AvailabilityConfig(model="trace", trace=trace), seed=0)
    keys = np.array([0, 1, 2], dtype=np.int64)
    assert avail.online(1, keys).tolist() == [True, True, False]
    assert avail.online(2, keys).tolist() == [False, True, True]
    assert avail.online(4, keys).tolist() == [False, True, False]
    trace.write_text("0,1x0\n")
    with pytest.raises(ConfigError, match="line 1"):
        Availability(AvailabilityConfig(model="trace", trace=trace), seed=0)


def test_dropout_is_seeded() -> None:
    cfg = AvailabilityConfig(dropout=0.2)
    drops = [dropped_out(cfg, 0, 1, k) for k in range(1000)]
    assert 0.15 < sum(drops) / 1000 < 0.25
    assert drops == [dropped_out(cfg, 0, 1, k) for k in range(1000)]
    assert not any(dropped_out(AvailabilityConfig(), 0, 1, k) for k in range(100))


def test_sampling_by_key_ignores_candidate_order() -> None:
    keys = np.arange(500)
    shuffled = np.random.default_rng(5).permutation(keys)
    a = sample_keys(np.random.default_rng(9), keys, 10)
    b = sample_keys(np.random.default_rng(9), shuffled, 10)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.tolist())) == 10


def test_state_budget_evicts_least_recently_used_first() -> None:
    stored = [StoredState("a", 10, 1.0), StoredState("b", 10, 3.0), StoredState("c", 10, 2.0)]
    assert to_evict(stored, StoredState("d", 10, 4.0), max_bytes=40) == []
    assert to_evict(stored, StoredState("d", 10, 4.0), max_bytes=30) == ["a"]
    assert to_evict(stored, StoredState("d", 10, 4.0), max_bytes=20) == ["a", "c"]
    # a client's own older state is replaced, never evicted for itself
    assert to_evict(stored, StoredState("a", 10, 4.0), max_bytes=30) == []
    assert budget_bytes(None, 10, 1 << 30) == 10 << 30
    assert budget_bytes(None, 10, 1 << 20) == 2 << 30
    assert budget_bytes(1.0, 10, 1 << 30) == 1 << 20
