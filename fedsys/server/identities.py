"""Who the clients are, learned without asking every node.

Simulation: the server samples stable client keys 0..N-1 (data partitions), never Flower's
random node ids, and gives a sampled key a node only when it is first needed: the first
registered node not yet playing a client, named in every message it gets
(``fedsys.client-key``). Which node plays which key changes nothing a client computes (its
data, seeds, residuals and name derive from the key), so a seed gives the same run whatever
Flower's node ids or the order and timing of registration, and start-up waits for no one
beyond the first sample. The sampled clients' signing keys arrive with their replies (a
``NodeHello`` beside the update) and are trusted on first use for the client id the server
assigned, never for one the node claims; so with encryption on no honest update is refused
for a key the server has not yet seen.

Deployed nodes name themselves, with their first reply too (``fedsys.server.deployed_identities``),
and the allow-list comes from files.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flwr.app import Message
from flwr.serverapp import Grid
from pydantic import ValidationError

from fedsys.crypto.keys import signing_public_from_raw
from fedsys.errors import FedsysError
from fedsys.protocol import HELLO_KEY, INTRO_RECORD, NodeHello

VIRTUAL_BASE = 1 << 48  # pooled simulation: a client's node id is base + key, never Flower's

log = logging.getLogger("fedsys")

POLL_SECONDS = 0.1


class RegistrationTimeout(FedsysError):
    """Fewer virtual nodes registered than the population within the timeout."""


@dataclass
class VirtualClients:
    """Stable key <-> node, assigned on first need, and what replies taught the server."""

    grid: Grid
    population: int
    timeout: float = 600.0  # longest wait for a registered node that plays no client yet
    node_of_key: dict[int, int] = field(default_factory=dict)
    key_of_node: dict[int, int] = field(default_factory=dict)
    client_ids: dict[int, str] = field(default_factory=dict)  # node -> client id
    declared_examples: dict[int, int] = field(default_factory=dict)  # node -> examples
    allow_list: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    _free: list[int] = field(default_factory=list)  # registered, playing no client (desc.)
    # A pool of nodes plays the clients (``fedsys.server.node_pool``): a key's node is its
    # stable virtual id, and the pooled grid picks a free Flower node per message.
    pooled: bool = False

    def node_for(self, key: int) -> int:
        """The node that plays client ``key``; a free registered node on first need."""
        node = self.node_of_key.get(key)
        if node is not None:
            return node
        if not 0 <= key < self.population:
            raise ValueError(f"client key {key} is outside 0..{self.population - 1}")
        if self.pooled:
            return self._name(key, VIRTUAL_BASE + key)
        deadline = time.monotonic() + self.timeout
        while not self._free:
            self._free = sorted(set(self.grid.get_node_ids()) - set(self.key_of_node))[::-1]
            if self._free:
                break
            if time.monotonic() > deadline:
                raise RegistrationTimeout(
                    f"no free simulated node registered within {self.timeout:.0f} s "
                    f"({len(self.key_of_node)} of {self.population} play a client)"
                )
            time.sleep(POLL_SECONDS)
        return self._name(key, self._free.pop())

    def _name(self, key: int, node: int) -> int:
        self.node_of_key[key], self.key_of_node[node] = node, key
        self.client_ids[node] = f"sim-{key}"
        return node

    def learn(self, reply: Message) -> None:
        """Take a reply's introduction (signing key, examples) for the node's assigned client.

        A key is trusted on first use for the client id the server gave that node; a later,
        different key is ignored (the update then fails its signature check and is refused).
        """
        node = reply.metadata.src_node_id
        if node not in self.key_of_node or reply.has_error():
            return
        record = reply.content.config_records.get(INTRO_RECORD)
        if record is None or HELLO_KEY not in record:
            return
        try:
            hello = NodeHello.model_validate_json(str(record[HELLO_KEY]))
        except ValidationError as exc:
            log.warning("node %d sent an unreadable introduction: %s", node, exc)
            return
        if hello.num_examples is not None and node not in self.declared_examples:
            self.declared_examples[node] = hello.num_examples
        cid = self.client_ids[node]
        if hello.signing_key is not None and cid not in self.allow_list:
            self.allow_list[cid] = signing_public_from_raw(bytes.fromhex(hello.signing_key))
