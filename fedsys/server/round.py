"""One round, in the order of Flower's ``Strategy.start``.

``play_round``: configure → downlink → collect → aggregate; ``complete_round``: evaluate →
publish → record → checkpoint, run at once or while the next round's clients train (the one
rule for that is ``fedsys.server.overlap``). Each step is a call into a module with one job.
"""

from __future__ import annotations

import time

import numpy as np

from fedsys.population.speed import task_seconds
from fedsys.server.aggregate import Aggregated, aggregate
from fedsys.server.availability_round import drop_out, online_keys
from fedsys.server.downlink import downlink_model, train_config
from fedsys.server.federated_rounds import federated_evaluation
from fedsys.server.federation import Federation
from fedsys.server.outputs import round_record
from fedsys.server.overlap import Overlap
from fedsys.server.peers import Peers
from fedsys.server.receive import receive
from fedsys.server.records import RoundRecord, append_round


def play_round(fed: Federation, peers: Peers, overlap: Overlap[Aggregated], rnd: int) -> None:
    """Train round ``rnd`` and hand it to ``overlap`` to be completed."""
    cfg, state, traits = fed.cfg, fed.state, fed.traits
    started = overlap.begin()
    state.round = rnd
    state.seed_sampling()
    # configure + downlink: the strategy samples nodes and builds the messages around the
    # global model as it travels (fp32, or coded in the train config)
    down = downlink_model(
        state.model,
        cfg.codec.downlink,
        cfg.codec.block_size,
        keeps_reference=traits.keeps_reference,
    )
    config = train_config(cfg, fed.exchange_key, down)
    peers.show_online(online_keys(peers.all_keys(), cfg, rnd))  # simulated availability
    messages = list(state.strategy.configure_train(rnd, down.for_strategy, config, peers.grid))
    peers.show_online(None)
    down.keep_off(messages)
    peers.assign(messages)  # simulation: which virtual client each node plays
    sampled = len(messages)
    # Simulated client speeds: a synchronous round lasts as long as its slowest client.
    keys = [peers.key_of_node.get(m.metadata.dst_node_id, -1) for m in messages]
    state.virtual_seconds += max(
        (task_seconds(cfg.population.speed, cfg.runtime.seed, k) for k in keys), default=0.0
    )
    messages, dropped = drop_out(messages, peers.key_of_node, cfg, rnd)
    # collect: replies are checked and summed as they come; the previous round is completed
    # while these clients train
    received = overlap.during(lambda busy: receive(fed, peers, rnd, messages, busy))
    received.result.rejected.extend(dropped)  # sampled, but dropped out (simulated)
    # aggregate: one new model, or the current one and why
    new = aggregate(
        state.strategy, traits, rnd, received.result, state.model, cfg.strategy.min_accepted
    )
    state.model = new.model
    done = Aggregated(
        round=rnd,
        started=started,
        model=state.model,
        result=received.result,
        sampled=sampled,
        bytes_down_each=down.nbytes,
        secagg=received.secagg,
        checkpoint=state.snapshot(state.wall_seconds()),
        refused=new.refused,
    )
    # evaluate, publish, record, checkpoint: complete_round, now or during the next round
    overlap.finish(rnd, done)


def complete_round(
    fed: Federation, peers: Peers, done: Aggregated, next_start: float | None
) -> None:
    """Evaluate ``done``'s model, publish it, write its metrics line and its checkpoint.

    The round's ``seconds`` run from its start to the next round's start (``next_start``),
    or, when nothing overlaps it, to the end of its evaluation. Publishing only queues the
    version: it is written once the checkpoint of its round is on disk.
    """
    evaluation = fed.evaluator(done.model)
    end = next_start if next_start is not None else time.perf_counter()
    record = round_record(done, evaluation, end - done.started, fed.fp32_bytes)
    federated_evaluation(fed, peers, done.round, record)
    if fed.cfg.population.speed.distribution != "none":
        record.virtual_seconds = float(done.checkpoint.extra.get("virtual_seconds", 0.0))
    record.published_version = _publish(fed, record, done.model)
    append_round(fed.paths.metrics, record)
    fed.checkpointer.write(done.checkpoint)
    fed.reporter.update(record)


def _publish(fed: Federation, record: RoundRecord, model: dict[str, np.ndarray]) -> int | None:
    """Queue the round's model for the registry per ``publish.mode``; never raises."""
    if fed.publisher is None:
        return None
    return fed.publisher.after_round(
        record.round,
        model,
        {"accuracy": record.central_accuracy, "loss": record.central_loss},
        record.clients,
        fed.run_id,
    )
