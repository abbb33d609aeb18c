"""Simulated availability in a synchronous round: sample among the clients online in the
round, and let some of the sampled ones drop out before replying.

Both draws come from ``fedsys.population.availability`` (seeded by run seed, round and client
key), so a seed gives the same online clients and the same dropouts in every run.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Message

from fedsys.config import ExperimentConfig
from fedsys.population import Availability, dropped_out
from fedsys.server.collect import Rejection

DROPPED = "dropped out before replying (population.availability.dropout)"


def online_keys(all_keys: list[int], cfg: ExperimentConfig, rnd: int) -> set[int] | None:
    """The clients online in round ``rnd`` (None: availability is not simulated)."""
    if cfg.population.availability.model == "always":
        return None
    keys = np.array(all_keys, dtype=np.int64)
    online = Availability(cfg.population.availability, cfg.runtime.seed).online(rnd, keys)
    return {int(k) for k in keys[online]}


def drop_out(
    messages: list[Message], key_of_node: dict[int, int], cfg: ExperimentConfig, rnd: int
) -> tuple[list[Message], list[Rejection]]:
    """The messages still sent, and a rejection for each sampled client that drops out."""
    settings, seed = cfg.population.availability, cfg.runtime.seed
    kept: list[Message] = []
    dropped: list[Rejection] = []
    for msg in messages:
        node = msg.metadata.dst_node_id
        key = key_of_node.get(node)
        if key is not None and dropped_out(settings, seed, rnd, key):
            dropped.append(Rejection(node, DROPPED))
        else:
            kept.append(msg)
    return kept, dropped
