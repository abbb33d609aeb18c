"""Many simulated clients played by a small pool of Flower nodes.

Flower's simulation engine checks every registered node's queue for new messages every 100 ms
(``flwr.server.superlink.fleet.vce.vce_api.add_messages_to_queue``: one locked scan of the
message store per node), so with one node per client a round's floor grows with the
population (about 90 ms of CPU per sweep at 10,000 nodes on an empty store) although a round
only needs the sampled clients. Nothing a simulated client computes depends on which node
plays it (data, seeds, residuals, signing key and name derive from its key), so fedsys
registers only as many nodes as can be busy at once (``runtime.simulated_nodes``) and hands
each message to a node that is free at that moment.

The server side keeps one stable *virtual* node id per client key (``VIRTUAL_BASE`` + key): every
round-level map (client ids, declared examples, the round binding, rejections) uses it; only
this grid sees Flower's node ids. A pushed message goes out as a copy addressed to a free
node; its reply comes back with the virtual id as its sender, looked up by the id of the
message it answers (never taken from the reply), and the node is free again. A message the
server stopped waiting for keeps its node busy until its reply is fetched (the next pull
fetches and drops it), so two messages never run on one node's Flower context at once.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

from fedsys.config import ExperimentConfig
from fedsys.errors import FedsysError
from fedsys.server.grid_view import KeyGrid

MIN_POOL = 64  # nodes registered at least (when the population is larger)
HEADROOM = 4  # nodes per client that can be busy at once (abandoned stragglers, eval)
POLL_SECONDS = 0.01


class NodePoolExhausted(FedsysError):
    """No simulated node became free within the timeout."""


def peak_concurrency(cfg: ExperimentConfig) -> int:
    """The most clients a run can have busy at once (training or evaluating)."""
    n = cfg.data.num_partitions
    busy = max(math.ceil(cfg.strategy.fraction_train * n), cfg.strategy.min_train_nodes)
    if cfg.fedbuff.enabled:
        busy = max(busy, cfg.fedbuff.concurrency)
    if cfg.federated_eval.enabled:
        fe = cfg.federated_eval
        busy = max(busy, math.ceil(fe.fraction_evaluate * n), fe.min_evaluate_nodes)
    return min(busy, n)


def pooling_refused(cfg: ExperimentConfig) -> str | None:
    """Why this run needs one Flower node per client (None: a pool is fine)."""
    if cfg.secagg.enabled:
        return "secure aggregation keeps per-node round state and masks by node id"
    if cfg.runtime.ray_address or os.environ.get("RAY_ADDRESS"):
        # Ray runs a message on any machine's worker: a pooled client's key file must be shared
        return "clients on several machines do not share the node-state directory"
    if cfg.task == "language_model":
        return "the final per-client scoring addresses every node"
    return None


def simulated_nodes(cfg: ExperimentConfig) -> int:
    """How many Flower nodes a simulation registers for ``cfg.data.num_partitions`` clients.

    ``runtime.simulated_nodes`` when set, else the population when it is small or a pool is
    refused, else max(64, 4 x the clients that can be busy at once)."""
    n = cfg.data.num_partitions
    if pooling_refused(cfg) is not None:
        return n
    configured = cfg.runtime.simulated_nodes
    if configured is not None:
        return min(configured, n)
    return min(n, max(MIN_POOL, HEADROOM * peak_concurrency(cfg)))


class PooledKeyGrid(KeyGrid):
    """A ``KeyGrid`` whose messages to virtual nodes run on whichever pool node is free."""

    def __init__(
        self,
        inner: Grid,
        key_of_node: dict[int, int],
        population: int,
        pool_size: int,
        timeout: float,
    ) -> None:
        super().__init__(inner, key_of_node, population)
        self.pool_size = pool_size
        self.timeout = timeout
        self._free: list[int] = []
        self._known: set[int] = set()  # pool nodes seen registered
        self._sent: dict[str, tuple[int, int]] = {}  # message id -> (virtual, pool node)
        self._stash: dict[str, Message] = {}  # replies fetched while waiting for a free node

    def _take_node(self) -> int:
        deadline = time.monotonic() + self.timeout
        while True:
            if len(self._known) < self.pool_size:
                fresh = set(self._inner.get_node_ids()) - self._known
                self._known |= fresh
                self._free.extend(sorted(fresh, reverse=True))
            if self._free:
                return self._free.pop()
            for reply in self._release(list(self._sent)):
                self._stash[reply.metadata.reply_to_message_id] = reply
            if self._free:
                continue
            if time.monotonic() > deadline:
                raise NodePoolExhausted(
                    f"no simulated node free within {self.timeout:.0f} s ({len(self._sent)} "
                    f"of {len(self._known)} busy); raise runtime.simulated_nodes"
                )
            time.sleep(POLL_SECONDS)

    def _release(self, message_ids: list[str]) -> list[Message]:
        """Fetch replies to ``message_ids``, free their nodes, and return them as sent by
        the virtual node each message was for."""
        if not message_ids:
            return []
        out = []
        for reply in self._inner.pull_messages(message_ids):
            sent = self._sent.pop(reply.metadata.reply_to_message_id, None)
            if sent is None:
                continue
            virtual, node = sent
            self._free.append(node)
            out.append(_from(reply, virtual))
        return out

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids: list[str] = []
        for msg in messages:
            virtual = msg.metadata.dst_node_id
            node = self._take_node()
            copy = Message(
                content=msg.content,
                dst_node_id=node,
                message_type=msg.metadata.message_type,
                group_id=msg.metadata.group_id,
                ttl=msg.metadata.ttl,
            )
            pushed = list(self._inner.push_messages([copy]))
            if not pushed:
                self._free.append(node)
                continue
            self._sent[pushed[0]] = (virtual, node)
            ids.append(pushed[0])
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Replies to ``message_ids``. A pull names every reply the caller still waits for
        (as ``exchange`` and the FedBuff loop do): any other reply is the answer to a message
        given up on, and is dropped once fetched."""
        asked = set(message_ids)
        # replies to messages the caller no longer waits for are fetched too, and dropped
        replies = [*self._stash.values(), *self._release(list(self._sent))]
        self._stash = {}
        return [r for r in replies if r.metadata.reply_to_message_id in asked]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        waiting = set(self.push_messages(messages))
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        replies: list[Message] = []
        while waiting and time.monotonic() < deadline:
            got = list(self.pull_messages(list(waiting)))
            waiting -= {r.metadata.reply_to_message_id for r in got}
            replies += got
            if waiting and not got:
                time.sleep(POLL_SECONDS)
        return replies


def _from(reply: Message, virtual: int) -> Message:
    """``reply`` as sent by ``virtual``. Flower's ``Metadata`` has no setter for the sender;
    Flower's own engine sets fields of a reply it made the same way (``_message_id``)."""
    reply.metadata.__dict__["_src_node_id"] = virtual
    return reply
