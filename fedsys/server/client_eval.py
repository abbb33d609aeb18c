"""The final model scored on every client's own held-out data (Flower's evaluate messages).

Central evaluation pools held-out data on the server; this asks each node to score the model
on what it holds back itself, which is how a federated model's benefit to each participant
(the mean and the worst client) is measured.
"""

from __future__ import annotations

import logging
import math
import statistics

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedsys.config import ExperimentConfig
from fedsys.protocol import CONFIG_KEY, SEED_KEY
from fedsys.server.records import ClientEvaluation, ClientScore, RejectedUpdate

log = logging.getLogger("fedsys")


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(float(value)) else None


def evaluate_clients(
    grid: Grid, cfg: ExperimentConfig, model: dict[str, np.ndarray], timeout: float
) -> ClientEvaluation:
    """Send ``model`` to every node for evaluation; scores from those that answer."""
    arrays = ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in model.items()})
    config = ConfigRecord({CONFIG_KEY: cfg.to_json(), SEED_KEY: cfg.runtime.seed})
    messages = [
        Message(
            content=RecordDict({"arrays": arrays, "config": config}),
            dst_node_id=node,
            message_type=MessageType.EVALUATE,
        )
        for node in sorted(grid.get_node_ids())
    ]
    scores: list[ClientScore] = []
    failed: list[RejectedUpdate] = []
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            failed.append(RejectedUpdate(node=node, reason=f"client error: {reply.error.reason}"))
            continue
        record = reply.content.metric_records.get("metrics")
        metrics: dict[str, object] = dict(record) if record is not None else {}
        loss, accuracy = _finite(metrics.get("eval_loss")), _finite(metrics.get("eval_accuracy"))
        count = _finite(metrics.get("num-examples"))
        if loss is None or accuracy is None or count is None:
            failed.append(RejectedUpdate(node=node, reason="evaluation reply without scores"))
            continue
        extra = {
            k.removeprefix("eval_"): v
            for k, v in metrics.items()
            if k.startswith("eval_") and k not in ("eval_loss", "eval_accuracy")
        }
        partition = _finite(metrics.get("partition-id"))
        scores.append(
            ClientScore(
                node=node,
                partition=None if partition is None else int(partition),
                loss=loss,
                accuracy=accuracy,
                num_examples=int(count),
                **extra,
            )
        )
    for item in failed:
        log.warning("client evaluation: node %d: %s", item.node, item.reason)
    scores.sort(key=lambda s: (s.partition if s.partition is not None else 1 << 30, s.node))
    perplexities = [float(p) for s in scores if (p := getattr(s, "perplexity", None)) is not None]
    nan = math.nan
    return ClientEvaluation(
        clients=scores,
        mean_loss=statistics.fmean(s.loss for s in scores) if scores else nan,
        mean_accuracy=statistics.fmean(s.accuracy for s in scores) if scores else nan,
        worst_accuracy=min((s.accuracy for s in scores), default=nan),
        mean_perplexity=statistics.fmean(perplexities) if perplexities else None,
        worst_perplexity=max(perplexities) if perplexities else None,
        failed=failed,
    )
