"""From a collected round to the new global model: one model, or the reason there is none.

A round's updates reach this step in one of two forms (``RoundResult``): the weighted mean
the collector already computed while streaming (``mean_weights``), or the replies packed for
the strategy (``for_strategy``). Where the strategy's result is that mean unchanged
(``mean_is_final`` in ``fedsys.strategy_traits``) the mean is the new model; otherwise the
strategy aggregates. Either way the step ends with exactly one model, finite, or the global
model as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.serverapp.strategy import Strategy

from fedsys.server.checkpoint import Checkpoint
from fedsys.server.collect import RoundResult
from fedsys.server.finite import non_finite
from fedsys.server.secagg_round import SecAggOutcome
from fedsys.server.strategy_state import export_state, import_state
from fedsys.strategy_traits import StrategyTraits

log = logging.getLogger("fedsys")


def strategy_needs_replies(traits: StrategyTraits) -> bool:
    """Whether the collector must pack the round's mean into a reply for the strategy
    (serializing the whole model once more) rather than hand over ``mean_weights`` only."""
    return not traits.mean_is_final


@dataclass(frozen=True)
class NewModel:
    """The global model after a round, and why the round's aggregate was refused, if it was."""

    model: dict[str, np.ndarray]
    refused: str | None = None


@dataclass(frozen=True)
class Aggregated:
    """A round whose new model is ready but not yet evaluated, recorded or checkpointed."""

    round: int
    started: float  # perf_counter at the round's start
    model: dict[str, np.ndarray]
    result: RoundResult
    sampled: int
    bytes_down_each: int
    secagg: SecAggOutcome | None
    checkpoint: Checkpoint
    refused: str | None = None  # why the round's aggregate did not become the global model


def aggregate(
    strategy: Strategy,
    traits: StrategyTraits,
    rnd: int,
    result: RoundResult,
    current: dict[str, np.ndarray],
    min_accepted: int,
) -> NewModel:
    """The model after round ``rnd``; the current one if too few updates or it fails.

    Whatever the replies held, a non-finite model never replaces the global one (the
    strategy's state is put back too).
    """
    if result.accepted < min_accepted:
        log.warning(
            "round %d: %d update(s) accepted, strategy.min_accepted is %d; "
            "the global model stays as it was",
            rnd,
            result.accepted,
            min_accepted,
        )
        return NewModel(current)
    before = export_state(strategy)  # references: strategies replace, not mutate
    if traits.mean_is_final and result.mean_weights is not None:
        candidate = result.mean_weights  # what the strategy would return
    else:
        try:
            agg_arrays, _ = strategy.aggregate_train(rnd, result.for_strategy)
        except Exception as exc:  # the round fails, the run goes on
            log.warning("round %d: aggregation failed (%s); global model unchanged", rnd, exc)
            import_state(strategy, *before)
            return NewModel(current, f"aggregation failed: {type(exc).__name__}: {exc}")
        if agg_arrays is None:
            return NewModel(current)
        candidate = _like(current, {k: v.numpy() for k, v in agg_arrays.items()})
    problem = non_finite(candidate)
    if problem is not None:
        import_state(strategy, *before)
        log.warning("round %d: %s; the global model stays as it was", rnd, problem)
        return NewModel(current, problem)
    return NewModel(candidate)


def _like(
    current: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``new`` in the dtypes of the current model (strategies may widen them)."""
    return {k: np.asarray(v, dtype=current[k].dtype) for k, v in new.items()}
