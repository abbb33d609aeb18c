"""The nodes of a run: who each one is, and the keys their updates are checked with.

Simulation learns nothing by asking: every registered node is given a stable key (its data
partition, ``fedsys.server.identities``), and a client's signing key arrives with its first
reply. Deployment keeps the start-up hello, with the allow-list from files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedsys.config import ExperimentConfig
from fedsys.crypto import AggregatorKeys
from fedsys.protocol import CLIENT_KEY
from fedsys.server.grid_view import StableOrderGrid
from fedsys.server.hello import allow_list, hello
from fedsys.server.identities import VirtualClients, wait_for_nodes
from fedsys.server.progress import Reporter


def _ignore(_reply: Message) -> None:
    return None


@dataclass(frozen=True)
class Peers:
    """Who the nodes are, and the keys their updates are checked with."""

    grid: StableOrderGrid  # node ids in a stable order, for reproducible sampling
    client_ids: dict[int, str]  # node -> client id
    declared_examples: dict[int, int]  # node -> training examples it declared
    keys: AggregatorKeys | None  # the aggregator's key and allow-list (codec.encrypt)
    key_of_node: dict[int, int] = field(default_factory=dict)  # node -> stable client key
    # What a reply teaches about its sender before it is checked (simulation: its key).
    learn: Callable[[Message], None] = _ignore
    assigns_clients: bool = False  # messages name the virtual client (simulation)

    def assign(self, messages: list[Message]) -> None:
        """Simulation: name in each message the virtual client its node plays.

        Flower's strategies put one RecordDict into every message, so each message gets its
        own copy of the content with its own config record (the arrays are shared)."""
        if not self.assigns_clients:
            return
        for msg in messages:
            key = self.key_of_node[msg.metadata.dst_node_id]
            content = RecordDict()
            for name, record in msg.content.items():
                if isinstance(record, ConfigRecord):
                    record = ConfigRecord(dict(record))
                    record[CLIENT_KEY] = key
                content[name] = record
            msg.content = content


def meet(
    grid: Grid,
    cfg: ExperimentConfig,
    reporter: Reporter,
    exchange_key: X25519PrivateKey | None,
    deployed_keys: AggregatorKeys | None,
    *,
    simulation: bool = False,
) -> Peers:
    """Simulation: assign stable keys to the registered nodes (no message); deployed: wait
    for the nodes' hellos, with the allow-list from files, not hellos."""
    if simulation and deployed_keys is None:
        return _virtual(grid, cfg, reporter, exchange_key)
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
    labels = {n: h.partition_id for n, h in hellos.items()}
    return Peers(
        grid=StableOrderGrid(grid, labels),
        client_ids={n: h.client_id for n, h in hellos.items()},
        declared_examples={
            n: h.num_examples for n, h in hellos.items() if h.num_examples is not None
        },
        keys=keys,
        key_of_node=labels,
    )


def _virtual(
    grid: Grid, cfg: ExperimentConfig, reporter: Reporter, exchange_key: X25519PrivateKey | None
) -> Peers:
    population = cfg.data.num_partitions
    reporter.stage(f"waiting for the {population} simulated nodes to register")
    clients = VirtualClients(wait_for_nodes(grid, population, cfg.train.timeout))
    reporter.stage(f"{population} nodes registered")
    return Peers(
        grid=StableOrderGrid(grid, clients.key_of_node),
        client_ids=clients.client_ids,
        declared_examples=clients.declared_examples,
        keys=AggregatorKeys(exchange_key, clients.allow_list) if exchange_key else None,
        key_of_node=clients.key_of_node,
        learn=clients.learn,
        assigns_clients=True,
    )
