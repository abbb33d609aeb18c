"""Check client replies and turn their deltas back into the weights Flower strategies expect.

Every reply is validated before it counts: it must carry one ArrayRecord whose keys, shapes
and dtypes equal the global model's, finite values, and a positive ``num-examples``. A failing
reply is rejected with a reason (logged and written to metrics.jsonl); the round goes on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedsys.errors import InvalidUpdate
from fedsys.protocol import record_number


@dataclass(frozen=True)
class Rejection:
    node_id: int
    reason: str


@dataclass
class SortedReplies:
    accepted: list[Message]
    rejected: list[Rejection]
    stragglers_dropped: int
    bytes_up: int


def _check_delta(node_id: int, delta: ArrayRecord, global_arrays: dict[str, np.ndarray]) -> None:
    if set(delta.keys()) != set(global_arrays):
        missing = sorted(set(global_arrays) - set(delta.keys()))[:3]
        extra = sorted(set(delta.keys()) - set(global_arrays))[:3]
        raise InvalidUpdate(node_id, f"tensor names differ (missing {missing}, unexpected {extra})")
    for key, arr in delta.items():
        ref = global_arrays[key]
        if tuple(arr.shape) != ref.shape or arr.dtype != str(ref.dtype):
            raise InvalidUpdate(
                node_id,
                f"tensor {key!r} is {arr.dtype}{list(arr.shape)}, "
                f"expected {ref.dtype}{list(ref.shape)}",
            )


def _metrics(node_id: int, content: RecordDict) -> MetricRecord:
    records = list(content.metric_records.values())
    if len(records) != 1:
        raise InvalidUpdate(node_id, f"expected one MetricRecord, got {len(records)}")
    num = records[0].get("num-examples")
    if not isinstance(num, int | float) or num <= 0:
        raise InvalidUpdate(node_id, f"num-examples must be a positive number, got {num!r}")
    return records[0]


def to_weights(
    node_id: int, delta: ArrayRecord, global_arrays: dict[str, np.ndarray]
) -> ArrayRecord:
    """``global + delta`` as an ArrayRecord; rejects non-finite values."""
    out: dict[str, Array] = {}
    for key, arr in delta.items():
        d = arr.numpy()
        if d.dtype.kind == "f" and not np.isfinite(d).all():
            raise InvalidUpdate(node_id, f"tensor {key!r} holds NaN or infinite values")
        out[key] = Array(np.asarray(global_arrays[key] + d, dtype=global_arrays[key].dtype))
    return ArrayRecord(out)


def sort_replies(
    replies: Iterable[Message],
    global_arrays: dict[str, np.ndarray],
    *,
    keep_stragglers: bool,
) -> SortedReplies:
    """Validate replies; accepted ones have their content replaced by reconstructed weights."""
    result = SortedReplies(accepted=[], rejected=[], stragglers_dropped=0, bytes_up=0)
    for msg in replies:
        node_id = msg.metadata.src_node_id
        if msg.has_error():
            result.rejected.append(Rejection(node_id, f"client error: {msg.error.reason}"))
            continue
        content = msg.content
        try:
            arrays = list(content.array_records.values())
            if len(arrays) != 1:
                raise InvalidUpdate(node_id, f"expected one ArrayRecord, got {len(arrays)}")
            delta = arrays[0]
            result.bytes_up += delta.count_bytes()
            metrics = _metrics(node_id, content)
            if not keep_stragglers and record_number(metrics, "straggler", 0) > 0:
                result.stragglers_dropped += 1
                continue
            _check_delta(node_id, delta, global_arrays)
            weights = to_weights(node_id, delta, global_arrays)
        except InvalidUpdate as exc:
            result.rejected.append(Rejection(exc.node_id, exc.reason))
            continue
        except (ValueError, TypeError) as exc:  # undecodable array payloads
            result.rejected.append(Rejection(node_id, f"malformed reply: {exc}"))
            continue
        msg.content = RecordDict({"arrays": weights, "metrics": metrics})
        result.accepted.append(msg)
    return result
