"""What each server strategy needs from the round, in one table.

The config validators (which sections a strategy cannot be combined with), the round loop
(whether updates can be summed as they arrive, whether the strategy keeps the global model as
its reference, whether the weighted mean is already the new model) and the tests all read
this table, so adding a strategy means adding one row here and one case in
``fedsys.server.strategies``. Plain data: importable without Flower or torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

StrategyName = Literal[
    "fedavg",
    "fedprox",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedmedian",
    "fedtrimmedavg",
    "krum",
    "multikrum",
    "bulyan",
]


@dataclass(frozen=True)
class StrategyTraits:
    """One strategy's needs; ``wrapped_in_dp`` gives those of Flower's server-side DP wrapper.

    ``robust``: aggregates by order statistics or selection over the individual updates
    (median, trimming, Krum), so it needs every update on its own: no streaming sum, no
    secure aggregation (which reveals only the sum), no DP wrapper (which assumes a mean).
    ``streaming``: the aggregate is an example-weighted mean (plus, maybe, a server optimizer
    step), so updates can be decoded and summed as they arrive and handed over as one reply.
    ``mean_is_final``: ``aggregate_train`` returns that mean unchanged: the round takes the
    streamed mean as the new model without a trip through the strategy.
    ``keeps_reference``: ``configure_train`` stores the exact global model (Flower's
    ``current_arrays``) to compute its update against, so it must see the fp32 model even
    when a coded one travels.
    ``keeps_stragglers``: partial work of clients that stopped early is aggregated by
    default (FedProx's systems heterogeneity); ``strategy.drop_stragglers`` overrides it.
    """

    robust: bool = False
    streaming: bool = True
    mean_is_final: bool = False
    keeps_reference: bool = False
    keeps_stragglers: bool = False

    @property
    def secagg_compatible(self) -> bool:
        return not self.robust

    @property
    def dp_compatible(self) -> bool:
        return not self.robust

    def wrapped_in_dp(self) -> StrategyTraits:
        """The DP wrapper clips each update against its stored reference model, then calls
        the strategy: updates are needed one by one and the mean is not final."""
        return replace(self, streaming=False, mean_is_final=False, keeps_reference=True)


_ROBUST = StrategyTraits(robust=True, streaming=False)
_SERVER_OPTIMIZER = StrategyTraits(keeps_reference=True)

STRATEGY_TRAITS: dict[StrategyName, StrategyTraits] = {
    "fedavg": StrategyTraits(mean_is_final=True),
    "fedprox": StrategyTraits(mean_is_final=True, keeps_stragglers=True),
    "fedavgm": _SERVER_OPTIMIZER,
    "fedadam": _SERVER_OPTIMIZER,
    "fedyogi": _SERVER_OPTIMIZER,
    "fedadagrad": _SERVER_OPTIMIZER,
    "fedmedian": _ROBUST,
    "fedtrimmedavg": _ROBUST,
    "krum": _ROBUST,
    "multikrum": _ROBUST,
    "bulyan": _ROBUST,
}


def traits_of(name: StrategyName, *, dp: bool = False) -> StrategyTraits:
    """The traits of strategy ``name``, wrapped in server-side DP when ``dp``."""
    traits = STRATEGY_TRAITS[name]
    return traits.wrapped_in_dp() if dp else traits


def names_where(predicate: Callable[[StrategyTraits], bool]) -> tuple[StrategyName, ...]:
    """Strategy names whose traits satisfy ``predicate``, in the table's order."""
    return tuple(n for n, t in STRATEGY_TRAITS.items() if predicate(t))


ROBUST_STRATEGIES = frozenset(names_where(lambda t: t.robust))
STREAMING_STRATEGIES = frozenset(names_where(lambda t: t.streaming))
