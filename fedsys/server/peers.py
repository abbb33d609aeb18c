"""The nodes of a run: who each one is, and the keys their updates are checked with.

Nothing is learned by asking every node. Simulation: strategies sample stable client keys
(data partitions), a sampled key gets a node on first need (``fedsys.server.identities``), and
a client's signing key arrives with its first reply. Deployment: strategies sample the
connected nodes in the order of stable keys (the node roster's client ids first), and a node
introduces itself with its first reply (``fedsys.server.deployed_identities``); signing keys
come from the allow-list files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedsys.config import ExperimentConfig
from fedsys.crypto import AggregatorKeys
from fedsys.protocol import BINDING_NODE_KEY, CLIENT_KEY
from fedsys.server.deployed_identities import DeployedClients
from fedsys.server.grid_view import DeployedGrid, KeyGrid, StableOrderGrid
from fedsys.server.identities import VirtualClients
from fedsys.server.node_pool import PooledKeyGrid, simulated_nodes
from fedsys.server.progress import Reporter

log = logging.getLogger("fedsys")


def _ignore(_reply: Message) -> None:
    return None


@dataclass(frozen=True)
class Peers:
    """Who the nodes are, and the keys their updates are checked with."""

    grid: StableOrderGrid  # what strategies sample from, in a stable order
    client_ids: dict[int, str]  # node -> client id
    declared_examples: dict[int, int]  # node -> training examples it declared
    keys: AggregatorKeys | None  # the aggregator's key and allow-list (codec.encrypt)
    key_of_node: dict[int, int] = field(default_factory=dict)  # node -> stable client key
    # What a reply teaches about its sender before it is checked (simulation: its key).
    learn: Callable[[Message], None] = _ignore
    virtual: VirtualClients | None = None  # simulation: keys get nodes on first need
    deployed: DeployedClients | None = None  # deployment: nodes introduce themselves

    def all_keys(self) -> list[int]:
        """Every client's stable key (simulation: 0..N-1, whether its node exists yet;
        deployment: the connected nodes' keys)."""
        if self.virtual is not None:
            return list(range(self.virtual.population))
        connected = self.grid.get_node_ids()  # a newly connected node gets its key here
        return sorted(self.key_of_node[n] for n in connected if n in self.key_of_node)

    def node_for(self, key: int) -> int:
        """The node that plays client ``key``."""
        if self.virtual is not None:
            return self.virtual.node_for(key)
        if self.deployed is not None:
            return self.deployed.node_for(key)
        raise KeyError(f"no node holds client key {key}")

    def show_online(self, online_keys: set[int] | None) -> None:
        """Let the strategy sample only among ``online_keys`` (None: everyone)."""
        if online_keys is None or self.virtual is not None:
            self.grid.visible = online_keys
        else:
            self.grid.visible = {n for n, k in self.key_of_node.items() if k in online_keys}

    def name_client(self, config: ConfigRecord, key: int) -> None:
        """Simulation: tell the node which client it plays for this message (and, on a pool
        of nodes, the virtual node id the client binds its update to). Deployed nodes name
        themselves: nothing is added."""
        if self.virtual is None:
            return
        config[CLIENT_KEY] = key
        if self.virtual.pooled:
            config[BINDING_NODE_KEY] = self.virtual.node_for(key)

    def assign(self, messages: list[Message]) -> None:
        """Simulation: address each sampled client's message to the node that plays it, and
        name the client in it.

        Flower's strategies put one RecordDict into every message, so each message gets its
        own copy of the content with its own config record (the arrays are shared)."""
        if self.virtual is None:
            return
        for msg in messages:
            key = msg.metadata.dst_node_id  # a key: strategies sample from ``KeyGrid``
            msg.metadata.dst_node_id = self.virtual.node_for(key)
            content = RecordDict()
            for name, record in msg.content.items():
                if isinstance(record, ConfigRecord):
                    record = ConfigRecord(dict(record))
                    self.name_client(record, key)
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
    roster: Mapping[int, str] | None = None,
) -> Peers:
    """Who the nodes are, without a message: simulation assigns stable keys to virtual
    clients; deployment labels the nodes the roster names (``roster``: node id -> client id)
    and learns the others from their first replies, with the allow-list from files."""
    if simulation and deployed_keys is None:
        return _virtual(grid, cfg, reporter, exchange_key)
    clients = DeployedClients(
        roster=dict(roster or {}),
        files_allow_list=deployed_keys.allow_list if deployed_keys else None,
    )
    reporter.stage(
        f"{len(clients.roster)} registered nodes named by the roster; "
        "nodes introduce themselves with their first reply"
        if clients.roster
        else "nodes introduce themselves with their first reply"
    )
    _await_connections(grid, cfg.strategy.min_available_nodes)
    return Peers(
        grid=DeployedGrid(grid, clients.key_of_node, clients.see),
        client_ids=clients.client_ids,
        declared_examples=clients.declared_examples,
        keys=AggregatorKeys(exchange_key, clients.allow_list) if exchange_key else None,
        key_of_node=clients.key_of_node,
        learn=clients.learn,
        deployed=clients,
    )


def _await_connections(grid: Grid, wanted: int) -> None:
    """Deployment: wait, sending nothing, until ``wanted`` nodes are connected (what a
    strategy's sampling waits for too; FedBuff and federated evaluation start from them)."""
    while (connected := len(list(grid.get_node_ids()))) < wanted:
        log.info("waiting for nodes: %d connected, %d needed", connected, wanted)
        time.sleep(1.0)


def _virtual(
    grid: Grid, cfg: ExperimentConfig, reporter: Reporter, exchange_key: X25519PrivateKey | None
) -> Peers:
    population, nodes = cfg.data.num_partitions, simulated_nodes(cfg)
    pooled = nodes < population
    reporter.stage(
        f"{population} simulated clients played by {nodes} nodes, each message on a free one"
        if pooled
        else f"{population} simulated clients; nodes are given them as they are sampled"
    )
    clients = VirtualClients(grid, population, cfg.train.timeout, pooled=pooled)
    key_grid = (
        PooledKeyGrid(grid, clients.key_of_node, population, nodes, cfg.train.timeout)
        if pooled
        else KeyGrid(grid, clients.key_of_node, population)
    )
    return Peers(
        grid=key_grid,
        client_ids=clients.client_ids,
        declared_examples=clients.declared_examples,
        keys=AggregatorKeys(exchange_key, clients.allow_list) if exchange_key else None,
        key_of_node=clients.key_of_node,
        learn=clients.learn,
        virtual=clients,
    )
