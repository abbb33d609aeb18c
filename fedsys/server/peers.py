"""The nodes of a run, as the start-up hello introduced them."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flwr.serverapp import Grid

from fedsys.config import ExperimentConfig
from fedsys.crypto import AggregatorKeys
from fedsys.server.grid_view import StableOrderGrid
from fedsys.server.hello import allow_list, hello
from fedsys.server.progress import Reporter


@dataclass(frozen=True)
class Peers:
    """Who the nodes are, and the keys their updates are checked with."""

    grid: StableOrderGrid  # node ids in a stable order, for reproducible sampling
    client_ids: dict[int, str]  # node -> client id
    declared_examples: dict[int, int]  # node -> training examples it declared
    keys: AggregatorKeys | None  # the aggregator's key and allow-list (codec.encrypt)


def meet(
    grid: Grid,
    cfg: ExperimentConfig,
    reporter: Reporter,
    exchange_key: X25519PrivateKey | None,
    deployed_keys: AggregatorKeys | None,
) -> Peers:
    """Wait for the nodes' hellos; deployed, the allow-list comes from files, not hellos."""
    reporter.stage(
        f"waiting for the nodes to start and introduce themselves "
        f"({cfg.data.num_partitions} expected)"
    )
    hellos = hello(grid, cfg)
    reporter.stage(f"{len(hellos)} nodes ready")
    keys = None
    if exchange_key is not None:
        trusted = deployed_keys.allow_list if deployed_keys else allow_list(hellos)
        keys = AggregatorKeys(exchange_key, trusted)
    return Peers(
        grid=StableOrderGrid(grid, {n: h.partition_id for n, h in hellos.items()}),
        client_ids={n: h.client_id for n, h in hellos.items()},
        declared_examples={
            n: h.num_examples for n, h in hellos.items() if h.num_examples is not None
        },
        keys=keys,
    )
