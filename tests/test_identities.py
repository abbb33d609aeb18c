"""Simulation identities: the server assigns clients to nodes and learns their keys from their
first replies, trusting a key only for the client it assigned to that node."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from intro_support import ListedNodes
from intro_support import introduction_reply as _reply

from fedsys.crypto.keys import public_to_raw
from fedsys.server.identities import VirtualClients


def test_a_sampled_key_gets_a_free_node_and_its_key_on_first_use(task_identity: None) -> None:
    clients = VirtualClients(ListedNodes([97, 42]), population=3)  # type: ignore[arg-type]
    assert clients.node_for(1) == 42  # the first free registered node
    assert clients.node_for(1) == 42  # and it keeps playing client 1
    assert clients.node_for(0) == 97
    clients.grid.node_ids.append(11)  # type: ignore[attr-defined]  # registers later
    assert clients.node_for(2) == 11
    assert clients.key_of_node == {42: 1, 97: 0, 11: 2}
    assert clients.client_ids[42] == "sim-1"
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    # the node claims another client's name: the key is filed under the assigned one
    clients.learn(_reply(42, "sim-0", first, examples=30))
    assert set(clients.allow_list) == {"sim-1"}
    assert clients.declared_examples == {42: 30}
    # a later, different key does not replace the first (its updates then fail to verify)
    clients.learn(_reply(42, "sim-1", second, examples=999))
    assert public_to_raw(clients.allow_list["sim-1"]) == public_to_raw(first.public_key())
    assert clients.declared_examples == {42: 30}
    clients.learn(_reply(5, "sim-2", second, examples=1))  # plays no client
    assert set(clients.allow_list) == {"sim-1"}
