"""A Flower ``Grid`` that runs fedsys's ClientApp in this process, one node after another.

For tests and benchmarks that run many whole federations (``simulations/bench_byzantine.py``):
the ServerApp's round loop (``fedsys.server.loop.run_federation``) and the ClientApp
(``fedsys.app.client_app``) are the real ones, but messages go through a dict instead of
Flower's simulation engine, so a short run needs no Ray start-up and is deterministic.
Written by hand because Flower's own in-memory grid needs a SuperLink state and a running
engine. ``fedsys simulate`` (Flower's engine) remains the way to run an experiment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

if TYPE_CHECKING:
    from fedsys.config import ExperimentConfig
    from fedsys.server.records import RunSummary

CLIENT_APP_RAISED = 2  # flwr.common.constant.ErrorCode.CLIENT_APP_RAISED_EXCEPTION


class InProcessGrid(Grid):
    """Nodes ``1..n`` holding partitions ``0..n-1``; replies are computed on push.

    ``node_ids``: other node ids, registered in that order (the i-th holds partition i), as
    Flower's engine gives random ones."""

    def __init__(
        self, app: ClientApp, num_nodes: int, run_id: int = 1, node_ids: list[int] | None = None
    ) -> None:
        self._app = app
        self._run = Run.create_empty(run_id)
        # Messages made outside a running Flower app need a task identity (server side: node 0)
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = run_id, 1, 0
        ids = node_ids if node_ids is not None else list(range(1, num_nodes + 1))
        self._contexts = {
            node: Context(
                run_id=run_id,
                node_id=node,
                node_config={"partition-id": i, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for i, node in enumerate(ids)
        }
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg_id = str(uuid4())
            msg.metadata.__dict__["_message_id"] = msg_id
            node = msg.metadata.dst_node_id
            TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = (
                self._run.run_id,
                1,
                node,
            )
            try:
                self._replies[msg_id] = self._app(msg, self._contexts[node])
            except Exception as exc:  # as Flower does: a failing ClientApp replies an error
                reason = f"{type(exc).__name__}: {exc}"
                self._replies[msg_id] = Message(
                    Error(code=CLIENT_APP_RAISED, reason=reason), reply_to=msg
                )
            TaskIdentity.node_id = 0
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return list(self.pull_messages(list(self.push_messages(messages))))


def run_in_process(
    cfg: ExperimentConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    node_ids: list[int] | None = None,
    simulation: bool = False,
    roster: Mapping[int, str] | None = None,
) -> RunSummary:
    """One whole federation over an :class:`InProcessGrid`, reporting nothing: the real
    ServerApp loop and ClientApp, for tests and benchmarks that run many of them.

    Without ``simulation`` the server treats the nodes as deployed ones (``roster``: node id
    -> client id, as ``fedsys server`` records them; in-process nodes are ``sim-<i>``)."""
    # imported here: the ClientApp and the round loop pull in every task, which a caller that
    # only wants the grid (with its own ClientApp) does not need
    from fedsys.app import client_app
    from fedsys.server.loop import run_federation
    from fedsys.server.node_pool import simulated_nodes
    from fedsys.server.progress import SilentReporter

    # as many nodes as `fedsys simulate` registers (a pool when the population is large)
    nodes = simulated_nodes(cfg) if simulation else cfg.data.num_partitions
    grid = InProcessGrid(client_app, nodes, node_ids=node_ids)
    return run_federation(
        grid, cfg, out_dir, SilentReporter(), resume=resume, simulation=simulation, roster=roster
    )
