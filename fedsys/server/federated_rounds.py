"""Federated evaluation rounds: a sample of clients evaluates the global model on its own
held-out data every ``federated_eval.evaluate_every`` rounds.

The sample is drawn from its own generator, seeded by (run seed, round), so turning
federated evaluation on or off never changes which clients train; the clients are addressed
by their stable keys (``fedsys.client-key``), like training. The summary (weighted mean,
worst client, 10th percentile) is written into the round's metrics line.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from fedsys.population import Availability, sample_keys
from fedsys.protocol import CONFIG_KEY, SEED_KEY, record_number
from fedsys.server.exchange import exchange
from fedsys.server.federated_eval import ClientEval, FederatedEval, summarize
from fedsys.server.federation import Federation
from fedsys.server.peers import Peers
from fedsys.server.records import RoundRecord

log = logging.getLogger("fedsys")

_SALT = 0xE7A1


def evaluation_sample(fed: Federation, peers: Peers, rnd: int) -> list[int]:
    """The stable keys of the clients that evaluate after round ``rnd``."""
    settings = fed.cfg.federated_eval
    keys = np.array(peers.all_keys(), dtype=np.int64)
    keys = keys[
        Availability(fed.cfg.population.availability, fed.cfg.runtime.seed).online(rnd, keys)
    ]
    if len(keys) == 0:
        return []
    k = max(settings.min_evaluate_nodes, int(len(keys) * settings.fraction_evaluate))
    rng = np.random.default_rng([fed.cfg.runtime.seed, rnd, _SALT])
    return [int(x) for x in sample_keys(rng, keys, min(k, len(keys)))]


def federated_evaluation(fed: Federation, peers: Peers, rnd: int, record: RoundRecord) -> None:
    """Evaluate round ``rnd``'s model on sampled clients (when due); fill ``record``."""
    settings = fed.cfg.federated_eval
    if not settings.enabled or rnd % settings.evaluate_every != 0:
        return
    summary = _evaluate(fed, peers, rnd)
    if summary is None:
        log.warning("round %d: no client returned a usable federated evaluation", rnd)
        return
    record.federated_accuracy = summary.accuracy
    record.federated_loss = summary.loss
    record.federated_worst_accuracy = summary.worst_accuracy
    record.federated_p10_accuracy = summary.p10_accuracy
    record.federated_median_accuracy = summary.median_accuracy
    record.federated_clients = summary.clients
    record.federated_examples = summary.examples


def _evaluate(fed: Federation, peers: Peers, rnd: int) -> FederatedEval | None:
    arrays = ArrayRecord({k: Array(v) for k, v in fed.state.model.items()})
    config_json, seed = fed.cfg.to_json(), fed.cfg.runtime.seed
    messages = []
    for key in evaluation_sample(fed, peers, rnd):
        config = ConfigRecord({CONFIG_KEY: config_json, SEED_KEY: seed, "server-round": rnd})
        peers.name_client(config, key)
        messages.append(
            Message(
                content=RecordDict({"arrays": arrays, "config": config}),
                dst_node_id=peers.node_for(key),
                message_type=MessageType.EVALUATE,
                group_id=str(rnd),
            )
        )
    results: list[ClientEval] = []

    def take(reply: Message) -> None:
        node = reply.metadata.src_node_id
        if reply.has_error():
            log.warning("round %d: federated evaluation failed on node %d", rnd, node)
            return
        try:
            metrics = reply.content["metrics"]
            results.append(
                ClientEval(
                    client=peers.key_of_node.get(node, -1),
                    num_examples=int(record_number(metrics, "num-examples")),
                    loss=record_number(metrics, "eval_loss"),
                    accuracy=record_number(metrics, "eval_accuracy"),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("round %d: node %d sent an unreadable evaluation: %s", rnd, node, exc)

    exchange(peers.grid, messages, take, fed.cfg.train.timeout)
    return summarize(results)
