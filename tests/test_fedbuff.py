"""FedBuff's pure parts: staleness weights, the buffer's aggregation rule and its saved state,
and the virtual clock's order."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsys.errors import ConfigError, FedsysError
from fedsys.fedbuff import FedBuffBuffer, VirtualClock, staleness_weight
from fedsys.scale_config import FedBuffConfig


def test_staleness_weights() -> None:
    assert staleness_weight("inverse_sqrt", 0) == 1.0
    assert staleness_weight("inverse_sqrt", 3) == pytest.approx(0.5)
    assert staleness_weight("polynomial", 3, exponent=1.0) == pytest.approx(0.25)
    assert staleness_weight("polynomial", 8, exponent=0.5) == pytest.approx(1 / 3)
    assert staleness_weight("constant", 50) == 1.0
    with pytest.raises(ConfigError, match=r"unknown fedbuff\.staleness"):
        staleness_weight("linear", 1)
    with pytest.raises(ConfigError, match=r">= 0"):
        staleness_weight("constant", -1)


def _model() -> dict[str, np.ndarray]:
    return {"w": np.zeros((2, 2), dtype=np.float32), "step": np.array(7, dtype=np.int64)}


def test_fresh_buffer_is_fedavg_of_its_updates() -> None:
    buf = FedBuffBuffer(size=2)
    buf.add(0, {"w": np.ones((2, 2)), "step": np.array(0)}, num_examples=1, staleness=0)
    assert not buf.full
    buf.add(1, {"w": 4 * np.ones((2, 2)), "step": np.array(0)}, num_examples=3, staleness=0)
    assert buf.full
    new = buf.apply(_model())
    np.testing.assert_allclose(new["w"], (1 * 1 + 3 * 4) / 4)
    assert new["w"].dtype == np.float32
    assert int(new["step"]) == 7  # integer buffers are not stepped
    assert buf.count == 0


def test_stale_updates_shrink_the_step_and_server_lr_scales_it() -> None:
    buf = FedBuffBuffer(size=2)
    buf.add(0, {"w": np.ones((2, 2))}, num_examples=1, staleness=0)
    buf.add(1, {"w": np.ones((2, 2))}, num_examples=1, staleness=3)  # weight 1/2
    new = buf.apply({"w": np.zeros((2, 2), dtype=np.float32)}, server_lr=2.0)
    np.testing.assert_allclose(new["w"], 2.0 * (1.0 + 0.5) / 2)


def test_buffer_rejects_mismatched_updates() -> None:
    buf = FedBuffBuffer(size=3)
    buf.add(0, {"w": np.ones(3)}, num_examples=1, staleness=0)
    with pytest.raises(FedsysError, match="shape"):
        buf.add(1, {"w": np.ones(4)}, num_examples=1, staleness=0)
    with pytest.raises(FedsysError, match="do not match"):
        buf.add(1, {"v": np.ones(3)}, num_examples=1, staleness=0)
    with pytest.raises(FedsysError, match="num_examples"):
        buf.add(1, {"w": np.ones(3)}, num_examples=0, staleness=0)
    with pytest.raises(FedsysError, match="empty"):
        FedBuffBuffer(size=1).apply({"w": np.zeros(3)})


def test_partial_buffer_survives_a_save_and_restore() -> None:
    a, b = FedBuffBuffer(size=3), FedBuffBuffer(size=3)
    a.add(4, {"w": np.arange(3.0)}, num_examples=2, staleness=1)
    arrays, meta = a.state()
    b.restore(arrays, meta)
    assert b.count == 1 and b.entries == a.entries
    for buf in (a, b):
        buf.add(5, {"w": np.ones(3)}, num_examples=1, staleness=0)
    base = {"w": np.zeros(3, dtype=np.float32)}
    np.testing.assert_array_equal(a.apply(base)["w"], b.apply(base)["w"])


def test_config_refuses_a_buffer_that_cannot_fill() -> None:
    with pytest.raises(ValueError, match="could never fill"):
        FedBuffConfig(concurrency=4, buffer_size=5)


def test_virtual_clock_orders_by_finish_then_key() -> None:
    clock = VirtualClock()
    clock.start(client=9, version=0, duration=10.0)
    clock.start(client=3, version=0, duration=1.0)
    clock.start(client=2, version=0, duration=1.0)
    assert clock.busy() == {2, 3, 9}
    first = clock.pop()
    assert (first.client, clock.now) == (2, 1.0)
    assert clock.pop().client == 3
    clock.start(client=4, version=1, duration=1.0)  # starts at t=1, finishes at 2
    nxt = clock.pop()
    assert (nxt.client, nxt.start, nxt.finish) == (4, 1.0, 2.0)
    assert clock.pop().client == 9 and math.isclose(clock.now, 10.0)
    assert len(clock) == 0


def test_fedbuff_refuses_secure_aggregation_and_non_linear_strategies() -> None:
    from fedsys.config import build_config
    from fedsys.errors import ConfigError as Refused

    with pytest.raises(Refused, match=r"secure aggregation masks one fixed cohort"):
        build_config({"fedbuff": {"enabled": True}, "secagg": {"enabled": True}})
    with pytest.raises(Refused, match=r"'krum'.*cannot run asynchronously"):
        build_config({"fedbuff": {"enabled": True}, "strategy": {"name": "krum"}})
    with pytest.raises(Refused, match=r"exceeds data\.num_partitions"):
        build_config({"fedbuff": {"enabled": True, "concurrency": 20, "buffer_size": 5}})
    cfg = build_config({"fedbuff": {"enabled": True}, "codec": {"encrypt": True}})
    assert cfg.fedbuff.concurrency == 10
