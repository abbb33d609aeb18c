"""Who the deployed nodes are, learned without asking every node.

A deployed node introduces itself with its first reply (a ``NodeHello`` beside its update:
client id, partition, update-signing key, training-set size), so start-up waits only for
``strategy.min_available_nodes`` connections and no round ever queries a node it did not
sample. Where ``fedsys server`` registered the SuperNode keys, the node roster
(``fedsys.node_roster``) names every registered node's client id before any message:
sampling follows the order of client ids, whatever random node ids Flower gave or in which
order the nodes connected, and a node is held to the client id it was registered for.

Trust: a node is bound to one client id for the run, on its first introduction (or by the
roster); a claim of a client id another node already holds, of another client id than the
roster's, or, with an allow-list from files, of a client id not on it, pins the node to
``REFUSED_INTRODUCTION`` (a roster node stays pinned to its registered id), so with
encryption its updates are refused as from an unknown sender. Signing keys come from the
allow-list files when there are some; otherwise (a run without files) a key is trusted on
first use for the client id its node was bound to, never replaced.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flwr.app import Message
from pydantic import ValidationError

from fedsys.crypto.keys import signing_public_from_raw
from fedsys.protocol import HELLO_KEY, INTRO_RECORD, NodeHello

log = logging.getLogger("fedsys")

REFUSED_INTRODUCTION = "(introduction refused)"


@dataclass
class DeployedClients:
    """Node -> stable key and client id (the roster's, else the node's first introduction),
    and what the introductions declared.

    Keys: the roster's nodes get 0..M-1 in the order of their client ids; a node the roster
    does not name gets the next key when it is first listed as connected."""

    roster: Mapping[int, str] = field(default_factory=dict)  # node -> registered client id
    # the allow-list from files (fixed), or None: keys are trusted on first use
    files_allow_list: Mapping[str, Ed25519PublicKey] | None = None
    key_of_node: dict[int, int] = field(default_factory=dict)  # node -> stable key
    node_of_key: dict[int, int] = field(default_factory=dict)
    client_ids: dict[int, str] = field(default_factory=dict)  # node -> client id
    declared_examples: dict[int, int] = field(default_factory=dict)  # node -> examples
    allow_list: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    _node_of_client: dict[str, int] = field(default_factory=dict)
    _introduced: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        for node, client in sorted(self.roster.items(), key=lambda item: item[1]):
            self._key(node)
            self._bind(node, client)
        if self.files_allow_list is not None:
            self.allow_list.update(self.files_allow_list)

    def see(self, nodes: Iterable[int]) -> None:
        """Give every newly listed node the next stable key (in node-id order)."""
        for node in sorted(n for n in nodes if n not in self.key_of_node):
            self._key(node)

    def node_for(self, key: int) -> int:
        node = self.node_of_key.get(key)
        if node is None:
            raise KeyError(f"no node holds client key {key}")
        return node

    def learn(self, reply: Message) -> None:
        """Take a reply's introduction, the first time its node introduces itself."""
        node = reply.metadata.src_node_id
        if reply.has_error() or node in self._introduced:
            return
        record = reply.content.config_records.get(INTRO_RECORD)
        if record is None or HELLO_KEY not in record:
            return
        self._introduced.add(node)  # one introduction per node and run, read or not
        try:
            hello = NodeHello.model_validate_json(str(record[HELLO_KEY]))
        except ValidationError as exc:
            log.warning("node %d sent an unreadable introduction: %s", node, exc)
            return
        reason = self._refusal(node, hello.client_id)
        if reason is not None:
            log.warning("node %d introduced itself as %r: %s", node, hello.client_id, reason)
            # pinned to a name no envelope can be verified under (allow-list ids are tokens)
            self.client_ids.setdefault(node, REFUSED_INTRODUCTION)
            return
        self._bind(node, hello.client_id)
        if hello.num_examples is not None:
            self.declared_examples[node] = hello.num_examples
        trust_on_first_use = self.files_allow_list is None
        key = hello.signing_key
        if trust_on_first_use and key is not None and hello.client_id not in self.allow_list:
            self.allow_list[hello.client_id] = signing_public_from_raw(bytes.fromhex(key))

    def _key(self, node: int) -> None:
        key = len(self.key_of_node)
        self.key_of_node[node], self.node_of_key[key] = key, node

    def _bind(self, node: int, client: str) -> None:
        self.client_ids[node], self._node_of_client[client] = client, node

    def _refusal(self, node: int, claimed: str) -> str | None:
        """Why ``node`` may not be bound to ``claimed``, or None."""
        registered = self.roster.get(node)
        if registered is not None and registered != claimed:
            return f"its key was registered for client {registered!r}"
        holder = self._node_of_client.get(claimed)
        if holder is not None and holder != node:
            return f"node {holder} already plays that client in this run"
        if self.files_allow_list is not None and claimed not in self.files_allow_list:
            return "not on the allow-list"
        return None
