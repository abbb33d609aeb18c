"""A pool of Flower nodes playing many simulated clients: how many nodes, and that a reply is
credited to the client its message was for and frees its node only once fetched."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedsys.config import build_config
from fedsys.server.identities import VIRTUAL_BASE
from fedsys.server.node_pool import PooledKeyGrid, pooling_refused, simulated_nodes


def test_nodes_registered_follow_the_clients_busy_at_once_not_the_population() -> None:
    def nodes(*settings: str) -> int:
        return simulated_nodes(build_config({}, list(settings)))

    big = ["data.num_partitions=10000", "strategy.fraction_train=0.001"]
    assert nodes(*big, "strategy.min_train_nodes=10") == 64
    assert nodes(*big, "strategy.min_train_nodes=100", "strategy.fraction_train=0.01") == 400
    assert nodes("data.num_partitions=10") == 10  # small: one node per client
    assert nodes(*big, "runtime.simulated_nodes=7") == 7
    cfg = build_config({}, [*big, "runtime.ray_address=127.0.0.1:6379"])
    assert simulated_nodes(cfg) == 10000 and pooling_refused(cfg) is not None


class _Engine:
    """Stands in for Flower's grid: records pushes; replies only when told to."""

    def __init__(self, nodes: list[int]) -> None:
        self.nodes = nodes
        self.pushed: dict[str, Message] = {}
        self.replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return self.nodes

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            mid = f"m{len(self.pushed)}"
            msg.metadata.__dict__["_message_id"] = mid
            self.pushed[mid] = msg
            ids.append(mid)
        return ids

    def answer(self, mid: str, claimed_sender: int) -> None:
        reply = Message(RecordDict(), reply_to=self.pushed[mid])
        reply.metadata.__dict__["_src_node_id"] = claimed_sender
        self.replies[mid] = reply

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self.replies.pop(m) for m in message_ids if m in self.replies]


def _to(virtual: int) -> Message:
    return Message(RecordDict(), dst_node_id=virtual, message_type=MessageType.TRAIN)


def test_replies_are_credited_by_message_and_nodes_free_only_when_fetched() -> None:
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    engine = _Engine([11, 22])
    grid = PooledKeyGrid(engine, {}, population=100, pool_size=2, timeout=0.05)  # type: ignore[arg-type]
    a, b = VIRTUAL_BASE + 5, VIRTUAL_BASE + 9
    (ma,) = grid.push_messages([_to(a)])
    (mb,) = grid.push_messages([_to(b)])
    assert {engine.pushed[ma].metadata.dst_node_id, engine.pushed[mb].metadata.dst_node_id} == {
        11,
        22,
    }
    engine.answer(ma, claimed_sender=VIRTUAL_BASE + 9)  # a sender's claim is not believed
    (reply,) = grid.pull_messages([ma, mb])
    assert reply.metadata.src_node_id == a
    # b's message is abandoned (not asked for); its node stays busy until its reply is fetched
    grid.pull_messages([])
    (mc,) = grid.push_messages([_to(VIRTUAL_BASE + 1)])
    assert engine.pushed[mc].metadata.dst_node_id == engine.pushed[ma].metadata.dst_node_id
    engine.answer(mb, claimed_sender=0)
    assert grid.pull_messages([mc]) == []  # b's late reply is fetched and dropped
    engine.answer(mc, claimed_sender=0)
    assert [r.metadata.src_node_id for r in grid.pull_messages([mc])] == [VIRTUAL_BASE + 1]
    assert len(grid.push_messages([_to(a), _to(b)])) == 2  # both nodes free again
