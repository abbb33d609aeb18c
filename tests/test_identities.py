"""Simulation identities: the server assigns clients to nodes and learns their keys from their
first replies, trusting a key only for the client it assigned to that node."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from fedsys.crypto.keys import public_to_raw
from fedsys.protocol import HELLO_KEY, INTRO_RECORD, NodeHello
from fedsys.server.identities import VirtualClients


def _reply(node: int, claimed_id: str, key: Ed25519PrivateKey, examples: int) -> Message:
    hello = NodeHello(
        partition_id=0,
        client_id=claimed_id,
        signing_key=public_to_raw(key.public_key()).hex(),
        num_examples=examples,
    )
    query = Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
    query.metadata.__dict__["_message_id"] = "q"
    reply = Message(
        RecordDict({INTRO_RECORD: ConfigRecord({HELLO_KEY: hello.model_dump_json()})}),
        reply_to=query,
    )
    reply.metadata.__dict__["_src_node_id"] = node
    return reply


def test_keys_follow_registration_sorted_and_are_trusted_on_first_use(task_identity: None) -> None:
    clients = VirtualClients([11, 42, 97])  # sorted node ids: node 42 plays client 1
    assert clients.key_of_node == {11: 0, 42: 1, 97: 2}
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
    clients.learn(_reply(5, "sim-2", second, examples=1))  # not a node of this run
    assert set(clients.allow_list) == {"sim-1"}
