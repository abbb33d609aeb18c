"""Who the clients are, learned without asking every node.

Simulation: the server assigns each registered node a stable key 0..N-1 (its data partition,
``fedsys.client-key`` in every message) by sorting the node ids once all N virtual nodes have
registered, which costs no message at all. The sampled nodes' signing keys arrive with their
replies (a ``NodeHello`` beside the update) and are trusted on first use for the client id
the server assigned, never for one the node claims; so with encryption on no honest update
is refused for a key the server has not yet seen.

Deployment keeps the start-up hello (``fedsys.server.hello``): nodes name themselves, and the
allow-list comes from files.
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

log = logging.getLogger("fedsys")

POLL_SECONDS = 0.1


class RegistrationTimeout(FedsysError):
    """Fewer virtual nodes registered than the population within the timeout."""


def wait_for_nodes(grid: Grid, population: int, timeout: float) -> list[int]:
    """All ``population`` node ids, sorted, once registered (polling the link state only)."""
    deadline = time.monotonic() + timeout
    while True:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= population:
            return node_ids[:population]
        if time.monotonic() > deadline:
            raise RegistrationTimeout(
                f"{len(node_ids)} of {population} simulated nodes registered within "
                f"{timeout:.0f} s (train.timeout)"
            )
        time.sleep(POLL_SECONDS)


@dataclass
class VirtualClients:
    """Node id <-> stable key, and what replies taught the server about each client."""

    node_of_key: list[int]
    key_of_node: dict[int, int] = field(default_factory=dict)
    client_ids: dict[int, str] = field(default_factory=dict)  # node -> client id
    declared_examples: dict[int, int] = field(default_factory=dict)  # node -> examples
    allow_list: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key_of_node = {node: key for key, node in enumerate(self.node_of_key)}
        self.client_ids = {node: f"sim-{key}" for key, node in enumerate(self.node_of_key)}

    @property
    def population(self) -> int:
        return len(self.node_of_key)

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
