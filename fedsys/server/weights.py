"""The aggregation weight and metrics of one reply, checked before they count.

The weight (num-examples) is read from inside the update's payload, where an envelope's
signature and AEAD cover it; the MetricRecord's copy travels outside and must agree. A weight
must be a finite positive integer no larger than what the node declared at start-up and than
``defense.max_num_examples``. Metrics are informational, but they are averaged into the run's
records, so a non-finite one is refused rather than written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from flwr.app import MetricRecord

from fedsys.errors import InvalidUpdate

AVERAGED_METRICS = ("train_loss", "train_seconds", "encode_seconds")
METRIC_LIMIT = 1e15  # weighted sums of metrics this large stay far from float64 overflow


def checked_weight(
    node_id: int, stated: float | None, claimed: object, cap: float, *, signed: bool
) -> float:
    """The weight to aggregate with, or InvalidUpdate naming what is wrong.

    ``stated``: the payload's (authenticated) value, or None when the payload has none;
    ``claimed``: the MetricRecord's ``num-examples``; ``signed``: whether the weight must
    come from the payload (plain and encrypted updates) or may only be claimed (secure
    aggregation, where it weighs nothing but the averaged metrics).
    """
    if signed and stated is None:
        raise InvalidUpdate(
            node_id,
            "payload does not state its weight (num-examples): the aggregation weight must "
            "travel inside the (signed) update payload",
        )
    if claimed is not None and (isinstance(claimed, bool) or not isinstance(claimed, int | float)):
        raise InvalidUpdate(node_id, f"num-examples must be a number, got {type(claimed).__name__}")
    value = stated if stated is not None else claimed
    if value is None:
        raise InvalidUpdate(node_id, "reply states no num-examples")
    weight = float(value)  # type: ignore[arg-type]
    if not math.isfinite(weight) or weight <= 0:
        raise InvalidUpdate(node_id, f"num-examples must be finite and positive, got {weight}")
    if weight != int(weight):
        raise InvalidUpdate(node_id, f"num-examples must be a whole number, got {weight}")
    if weight > cap:
        raise InvalidUpdate(
            node_id, f"num-examples {weight:.0f} exceeds the node's limit of {cap:.0f}"
        )
    if stated is not None and claimed is not None and float(claimed) != weight:  # type: ignore[arg-type]
        raise InvalidUpdate(
            node_id,
            f"num-examples in the metrics ({claimed}) differs from the signed payload's "
            f"({weight:.0f})",
        )
    return weight


def checked_metrics(node_id: int, metrics: Mapping[str, object]) -> dict[str, float]:
    """The averaged metrics of a reply (absent ones as 0.0); non-finite ones are refused."""
    out: dict[str, float] = {}
    for key in AVERAGED_METRICS:
        value = metrics.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidUpdate(node_id, f"metric {key!r} must be a number")
        if not math.isfinite(float(value)) or abs(float(value)) > METRIC_LIMIT:
            raise InvalidUpdate(node_id, f"metric {key!r} is not finite or out of range ({value})")
        out[key] = float(value)
    return out


def strategy_metrics(weight: float, averaged: Mapping[str, float]) -> MetricRecord:
    """The MetricRecord a strategy sees: the checked weight and metrics, one fixed key set
    (Flower refuses replies whose metric keys differ)."""
    return MetricRecord({"num-examples": int(weight), **averaged})
