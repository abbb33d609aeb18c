"""Per-client speed: how many times slower than the fastest client each simulated client is.

A client's slowdown is drawn from its own generator, seeded by (run seed, client key), so it
is the same in every round, every run and every process, and does not depend on which other
clients exist (drawing one client costs O(1), not O(population)).
"""

from __future__ import annotations

import numpy as np

from fedsys.scale_config import SpeedConfig

_SALT = 0x5EED  # keeps these draws apart from other per-client streams of the same seed


def slowdown(cfg: SpeedConfig, seed: int, client: int) -> float:
    """Client ``client``'s slowdown (>= 1, at most ``cfg.max_factor``)."""
    if cfg.distribution == "none":
        return 1.0
    rng = np.random.default_rng([seed, client, _SALT])
    if cfg.distribution == "two_point":
        factor = cfg.slow_factor if rng.random() < cfg.slow_fraction else 1.0
    elif cfg.distribution == "lognormal":
        factor = float(np.exp(abs(rng.normal(0.0, cfg.sigma))))
    else:  # pareto: 1 + Lomax(alpha), i.e. a Pareto with minimum 1
        factor = 1.0 + float(rng.pareto(cfg.alpha))
    return float(min(factor, cfg.max_factor))


def slowdowns(cfg: SpeedConfig, seed: int, clients: list[int]) -> list[float]:
    return [slowdown(cfg, seed, c) for c in clients]


def task_seconds(cfg: SpeedConfig, seed: int, client: int) -> float:
    """Simulated seconds client ``client`` takes for one task."""
    return cfg.task_seconds * slowdown(cfg, seed, client)
