"""The aggregation step: one new model, or the current one and the reason."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message
from flwr.serverapp.strategy import FedAvg

from fedsys.server.aggregate import aggregate, strategy_needs_replies
from fedsys.server.collect import RoundResult
from fedsys.strategy_traits import STRATEGY_TRAITS

CURRENT = {"w": np.zeros(3, np.float32)}
FEDAVG, FEDADAM = STRATEGY_TRAITS["fedavg"], STRATEGY_TRAITS["fedadam"]


class _Stub(FedAvg):
    """Returns ``out`` (or raises it) and changes its own state while aggregating."""

    def __init__(self, out: Any) -> None:
        super().__init__()
        self.out = out
        self.step = 0  # strategy state: put back when the round is refused
        self.calls: list[int] = []  # not state (export_state skips it): survives a refusal

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> Any:
        self.calls.append(server_round)
        self.step += 1
        if isinstance(self.out, Exception):
            raise self.out
        return self.out, None


def _result(accepted: int = 2, mean: float | None = None) -> RoundResult:
    weights = {"w": np.full(3, mean, np.float32)} if mean is not None else None
    return RoundResult(for_strategy=[], accepted=accepted, mean_weights=weights)


def _record(value: float) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.full(3, value, np.float64))})


def test_a_final_mean_is_the_new_model_without_the_strategy() -> None:
    strategy = _Stub(_record(9.0))
    result = _result(mean=0.5)
    new = aggregate(strategy, FEDAVG, 1, result, CURRENT, min_accepted=1)
    assert new.refused is None and new.model is result.mean_weights
    assert not strategy.calls and not strategy_needs_replies(FEDAVG)


def test_otherwise_the_strategy_aggregates_in_the_model_dtypes() -> None:
    new = aggregate(_Stub(_record(0.25)), FEDADAM, 1, _result(mean=0.5), CURRENT, 1)
    assert new.refused is None and new.model["w"].dtype == np.float32
    np.testing.assert_array_equal(new.model["w"], 0.25)
    assert strategy_needs_replies(FEDADAM)


def test_too_few_updates_keep_the_model() -> None:
    strategy = _Stub(_record(1.0))
    new = aggregate(strategy, FEDADAM, 1, _result(accepted=1), CURRENT, min_accepted=2)
    assert new.model is CURRENT and new.refused is None and not strategy.calls


def test_a_non_finite_model_is_refused_and_the_state_put_back() -> None:
    strategy = _Stub(_record(float("nan")))
    new = aggregate(strategy, FEDADAM, 1, _result(), CURRENT, 1)
    assert new.model is CURRENT and new.refused is not None and "w" in new.refused
    assert strategy.calls == [1] and strategy.step == 0


def test_a_failing_strategy_is_refused_and_the_state_put_back() -> None:
    strategy = _Stub(ValueError("shapes differ"))
    new = aggregate(strategy, FEDADAM, 1, _result(), CURRENT, 1)
    assert new.model is CURRENT and strategy.step == 0
    assert new.refused == "aggregation failed: ValueError: shapes differ"
