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
from fedsys.server.grid_view import StableOrderGrid

DROPPED = "dropped out before replying (population.availability.dropout)"


def show_online(
    grid: StableOrderGrid, key_of_node: dict[int, int], cfg: ExperimentConfig, rnd: int
) -> None:
    """Make ``grid`` list only the nodes whose clients are online in round ``rnd``."""
    if cfg.population.availability.model == "always":
        grid.visible = None
        return
    nodes = sorted(key_of_node, key=key_of_node.__getitem__)
    keys = np.array([key_of_node[n] for n in nodes], dtype=np.int64)
    online = Availability(cfg.population.availability, cfg.runtime.seed).online(rnd, keys)
    grid.visible = {n for n, up in zip(nodes, online.tolist(), strict=True) if up}


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
