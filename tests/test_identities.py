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


class _Registered:
    """What VirtualClients asks of a grid: the registered node ids, in any order."""

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return self.node_ids


def test_a_sampled_key_gets_a_free_node_and_its_key_on_first_use(task_identity: None) -> None:
    clients = VirtualClients(_Registered([97, 42]), population=3)  # type: ignore[arg-type]
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
