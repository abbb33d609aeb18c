"""The start-up hello: who each node is, which data it holds, and which key it signs with."""

from __future__ import annotations

import logging
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from pydantic import ValidationError

from fedsys.config import ExperimentConfig
from fedsys.crypto.keys import signing_public_from_raw
from fedsys.protocol import CONFIG_KEY, HELLO_KEY, SEED_KEY, NodeHello

log = logging.getLogger("fedsys")


def hello(grid: Grid, cfg: ExperimentConfig) -> dict[int, NodeHello]:
    """Ask every node who it is; nodes that do not answer stay unknown (and unlabelled).

    The query carries the experiment config, so a node can declare how many training
    examples it holds (the cap on its updates' weight)."""
    min_nodes, timeout = cfg.strategy.min_available_nodes, cfg.train.timeout
    while len(node_ids := list(grid.get_node_ids())) < min_nodes:
        log.info("waiting for nodes: %d connected, %d needed", len(node_ids), min_nodes)
        time.sleep(1.0)
    config_json = cfg.to_json()
    queries = [
        Message(
            content=RecordDict(
                {"config": ConfigRecord({CONFIG_KEY: config_json, SEED_KEY: cfg.runtime.seed})}
            ),
            dst_node_id=nid,
            message_type=MessageType.QUERY,
        )
        for nid in node_ids
    ]
    hellos: dict[int, NodeHello] = {}
    for reply in grid.send_and_receive(queries, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error() or "hello" not in reply.content.config_records:
            log.warning("node %d did not introduce itself", node)
            continue
        try:
            raw = reply.content.config_records["hello"][HELLO_KEY]
            hellos[node] = NodeHello.model_validate_json(str(raw))
        except (KeyError, ValidationError) as exc:
            log.warning("node %d sent an unreadable hello: %s", node, exc)
    return hellos


def allow_list(hellos: dict[int, NodeHello]) -> dict[str, Ed25519PublicKey]:
    """Signing keys announced at start-up (simulation: keys are made per run)."""
    return {
        h.client_id: signing_public_from_raw(bytes.fromhex(h.signing_key))
        for h in hellos.values()
        if h.signing_key is not None
    }
