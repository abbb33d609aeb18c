"""A Grid that lists nodes in a stable order, so seeded client sampling is reproducible.

Flower samples nodes with ``random.sample(grid.get_node_ids(), k)``. Node ids are random per
run, so the same seed would pick different partitions after a resume. This view orders node
ids by a stable label (the node's partition id) and delegates everything else unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run


class StableOrderGrid(Grid):
    """Delegates to ``inner``; ``get_node_ids`` is sorted by ``labels`` (unknown ids last)."""

    def __init__(self, inner: Grid, labels: Mapping[int, int]) -> None:
        self._inner = inner
        self._labels = dict(labels)
        # Simulated availability: when set, only these nodes are listed (sampled from).
        self.visible: set[int] | None = None

    def set_run(self, run: Run) -> None:
        self._inner.set_run(run)

    @property
    def run(self) -> Run:
        return self._inner.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self._inner.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        nodes = self._inner.get_node_ids()
        if self.visible is not None:
            nodes = [n for n in nodes if n in self.visible]
        return sorted(nodes, key=self.order_key)

    def order_key(self, node_id: int) -> tuple[int, int]:
        """Labelled nodes by label, then unlabelled ones by id."""
        label = self._labels.get(node_id)
        return (0, label) if label is not None else (1, node_id)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._inner.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._inner.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self._inner.send_and_receive(messages, timeout=timeout)


class KeyGrid(StableOrderGrid):
    """Simulation: Flower's strategies sample stable client keys 0..N-1 (``get_node_ids``),
    not node ids; the round then gives each sampled key its node (``Peers.assign``).

    ``visible`` holds keys here (the clients online this round)."""

    def __init__(self, inner: Grid, key_of_node: dict[int, int], population: int) -> None:
        super().__init__(inner, {})
        self._labels = key_of_node  # filled as keys get nodes: order_key follows it
        self.population = population

    def get_node_ids(self) -> Iterable[int]:
        if self.visible is None:
            return range(self.population)
        return sorted(k for k in self.visible if 0 <= k < self.population)


class DeployedGrid(StableOrderGrid):
    """Deployment: node ids as Flower lists them, each first shown to ``see`` (which gives a
    newly connected node its stable key), sorted by those keys.

    ``key_of_node`` is the live mapping ``see`` fills; ``visible`` holds node ids."""

    def __init__(
        self, inner: Grid, key_of_node: dict[int, int], see: Callable[[Iterable[int]], None]
    ) -> None:
        super().__init__(inner, {})
        self._labels = key_of_node
        self._see = see

    def get_node_ids(self) -> Iterable[int]:
        nodes = list(self._inner.get_node_ids())
        self._see(nodes)
        if self.visible is not None:
            nodes = [n for n in nodes if n in self.visible]
        return sorted(nodes, key=self.order_key)
