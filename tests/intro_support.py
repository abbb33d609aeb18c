"""Helpers for identity tests: a reply carrying a node's introduction, and a grid stub that
only lists node ids."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ConfigRecord, Message, MessageType, RecordDict

from fedsys.crypto.keys import public_to_raw
from fedsys.protocol import HELLO_KEY, INTRO_RECORD, NodeHello


def introduction_reply(
    node: int, claimed_id: str, key: Ed25519PrivateKey, examples: int = 10
) -> Message:
    """A train reply from ``node`` whose introduction claims ``claimed_id`` and ``key``."""
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


class ListedNodes:
    """What identity code asks of a grid: the node ids currently listed, in any order."""

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)
