"""A budget for per-client state (error-feedback residuals) that does not grow with the
population.

A cross-device run samples k of N clients per round, so a residual written in one round is
read back only when that client is sampled again, on average N/k rounds later. Keeping every
client's residual costs 2 x N x model bytes (two slots each); at 1,000 clients and 10M
parameters that is 80 GB. The budget keeps at most ``max_bytes`` of residuals: when a new one
would go over, the least recently written clients' residuals are dropped.

What eviction does to error feedback: an evicted client's next update starts from a zero
residual, exactly as on its first round. The mass top-k or quantization had dropped from its
earlier updates is lost (never applied), so compression error is no longer fully corrected
for that client; nothing else changes. With LRU order the clients evicted are those sampled
longest ago, whose residuals were computed against the oldest global models, i.e. the ones
whose correction was already the least accurate. A budget of at least one residual per
client sampled in the last ``budget / (2 x model bytes) / k`` rounds keeps every client
returning within that many rounds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedsys.config import ExperimentConfig

DEFAULT_BUDGET_BYTES = 2 << 30


@dataclass(frozen=True)
class StoredState:
    """One client's stored state: its size and when it was last written (any monotone clock)."""

    client: str
    nbytes: int
    last_used: float


def budget_bytes(configured_mb: float | None, sampled: int, state_bytes: int) -> int:
    """The budget: as configured, else the larger of 2 GiB and one state per sampled client."""
    if configured_mb is not None:
        return int(configured_mb * (1 << 20))
    return max(DEFAULT_BUDGET_BYTES, sampled * state_bytes)


def sampled_per_round(cfg: ExperimentConfig) -> int:
    """Clients training at once: FedBuff's concurrency, else the round's sample size."""
    if cfg.fedbuff.enabled:
        return cfg.fedbuff.concurrency
    n = cfg.data.num_partitions
    return max(cfg.strategy.min_train_nodes, int(n * cfg.strategy.fraction_train))


def to_evict(stored: Iterable[StoredState], incoming: StoredState, max_bytes: int) -> list[str]:
    """Clients whose state to drop so that ``incoming`` fits in ``max_bytes``, oldest first.

    The incoming client's own older state is replaced, not counted twice; it is never evicted
    to make room for itself. If ``incoming`` alone is over budget, everything else goes.
    """
    others = sorted(
        (s for s in stored if s.client != incoming.client), key=lambda s: (s.last_used, s.client)
    )
    total = incoming.nbytes + sum(s.nbytes for s in others)
    evicted: list[str] = []
    for state in others:
        if total <= max_bytes:
            break
        evicted.append(state.client)
        total -= state.nbytes
    return evicted
