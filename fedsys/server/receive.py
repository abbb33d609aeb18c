"""Receive a round's updates: streamed through the collector, or by secure aggregation.

Either way the step ends with one ``RoundResult``; nodes that never answered are in its
``rejected`` list. ``clients_busy`` is called once the round's messages are out: server work
that can run while the clients train (see ``fedsys.server.overlap``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from flwr.app import Message

from fedsys.crypto import RoundBinding
from fedsys.server.aggregate import strategy_needs_replies
from fedsys.server.collect import Rejection, RoundCollector, RoundResult
from fedsys.server.exchange import exchange
from fedsys.server.federation import Federation
from fedsys.server.peers import Peers
from fedsys.server.secagg_round import SecAggOutcome, SecAggRound

log = logging.getLogger("fedsys")


@dataclass(frozen=True)
class Received:
    result: RoundResult
    secagg: SecAggOutcome | None = None


def receive(
    fed: Federation,
    peers: Peers,
    rnd: int,
    messages: list[Message],
    clients_busy: Callable[[], None],
) -> Received:
    """Send ``messages`` and turn the replies into the round's result."""
    cfg, state = fed.cfg, fed.state
    build_record = strategy_needs_replies(fed.traits)
    run_id = peers.grid.run.run_id
    if cfg.secagg.enabled:
        clients_busy()  # its stages exchange several times: nothing to overlap
        secagg = SecAggRound(
            peers.grid,
            cfg,
            state.model,
            run_id=run_id,
            rnd=rnd,
            keep_stragglers=cfg.strategy.keeps_stragglers,
        ).run(messages, build_record=build_record)
        received = Received(secagg.result, secagg)
    else:
        collector = RoundCollector(
            state.model,
            fed.policy,
            binding=lambda node: RoundBinding(run_id=run_id, round=rnd, node_id=node),
            keys=peers.keys,
            client_ids=peers.client_ids,
            keep_stragglers=cfg.strategy.keeps_stragglers,
            streaming=fed.traits.streaming,
            defense=cfg.defense,
            norm_bound=state.norm_bound,
            declared_examples=peers.declared_examples,
            expected_replies=len(messages),
            seen_payloads=state.seen_payloads,
        )

        def take(reply: Message) -> None:
            peers.learn(reply)  # simulation: the sender's key arrives with its first reply
            collector.offer(reply)

        silent = exchange(peers.grid, messages, take, cfg.train.timeout, after_push=clients_busy)
        result = collector.finish(peers.grid.order_key, build_record=build_record)
        state.norm_bound.end_round(result.accepted_norms)
        for node in silent:
            result.rejected.append(Rejection(node, "no reply within train.timeout"))
        received = Received(result)
    for rej in received.result.rejected:
        log.warning("round %d: update from node %d rejected: %s", rnd, rej.node_id, rej.reason)
    return received
