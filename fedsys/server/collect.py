"""Receive one round's replies as they arrive: validate, decode, and add them up.

Each reply is checked before it counts (sender, signature, round and run, frames, layout,
finite values, norm, size; see ``fedsys.codec.validate``). For the linear strategies
(FedAvg, FedProx, FedAvgM and the FedOpt family) the decoded delta goes straight into a
preallocated running sum, so the server holds O(model) memory whatever the number of clients;
the strategy then receives a single reply carrying ``global + weighted mean delta`` with the
total weight, which its weighted average returns unchanged. Robust strategies and the DP
wrappers need every update, so those are decoded to dense weights, one per client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedsys.codec import StreamingSum, UpdatePolicy, decode_update, template_from, validate_update
from fedsys.crypto import AggregatorKeys, RoundBinding
from fedsys.errors import CodecError, InvalidUpdate
from fedsys.protocol import PAYLOAD_KEY, record_nbytes, record_number

AVERAGED_METRICS = ("train_loss", "train_seconds", "encode_seconds")


@dataclass(frozen=True)
class Rejection:
    node_id: int
    reason: str


@dataclass(frozen=True)
class ReceivedUpdate:
    """Bookkeeping for one reply that carried an update (accepted or not)."""

    node_id: int
    nbytes: int
    accepted: bool


@dataclass
class RoundResult:
    """What the round loop needs after the last reply."""

    for_strategy: list[Message]
    accepted: int
    rejected: list[Rejection] = field(default_factory=list)
    received: list[ReceivedUpdate] = field(default_factory=list)
    stragglers_dropped: int = 0
    decode_seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    # Streaming rounds: ``global + weighted mean delta``, what FedAvg/FedProx would return.
    mean_weights: dict[str, np.ndarray] | None = None


class RoundCollector:
    """Validates and aggregates replies one at a time, in whatever order they come."""

    def __init__(
        self,
        global_arrays: Mapping[str, np.ndarray],
        policy: UpdatePolicy,
        *,
        binding: Callable[[int], RoundBinding],
        keys: AggregatorKeys | None,
        client_ids: Mapping[int, str],
        keep_stragglers: bool,
        streaming: bool,
    ) -> None:
        self._global = global_arrays
        self._template = template_from(global_arrays)
        self._policy = policy
        self._binding = binding
        self._keys = keys
        self._client_ids = client_ids
        self._keep_stragglers = keep_stragglers
        self._sum = StreamingSum(self._template) if streaming else None
        self._dense: list[tuple[int, Message]] = []
        self._first: Message | None = None
        self._seen: set[int] = set()
        self._metric_sums = dict.fromkeys(AVERAGED_METRICS, 0.0)
        self.result = RoundResult(for_strategy=[], accepted=0)

    def offer(self, msg: Message) -> None:
        """Take one reply; a bad one is recorded as rejected and changes nothing."""
        node_id = msg.metadata.src_node_id
        if msg.has_error():
            self._reject(node_id, f"client error: {msg.error.reason}")
            return
        start = time.perf_counter()
        nbytes = 0
        try:
            record = msg.content.config_records.get("update")
            if record is None:
                raise InvalidUpdate(node_id, "reply carries no 'update' record")
            nbytes = record_nbytes(record)
            metrics = _single_metrics(node_id, msg.content)
            weight = record_number(metrics, "num-examples")
            if weight <= 0:
                raise InvalidUpdate(node_id, f"num-examples must be positive, got {weight}")
            if node_id in self._seen:
                raise InvalidUpdate(node_id, "second update from this node in the same round")
            if not self._keep_stragglers and record_number(metrics, "straggler", 0) > 0:
                self.result.stragglers_dropped += 1
                self.result.received.append(ReceivedUpdate(node_id, nbytes, accepted=False))
                return
            checked = validate_update(
                _received_payload(record),
                self._template,
                self._policy,
                keys=self._keys,
                expect=self._binding(node_id),
                client_id=self._client_ids.get(node_id),
            )
            if self._sum is not None:
                self._sum.add(checked.wire, weight)
            else:
                self._dense.append((node_id, self._as_weights(msg, checked.wire, metrics)))
        except InvalidUpdate as exc:
            self._reject(node_id, exc.reason, nbytes)
            return
        except CodecError as exc:
            self._reject(node_id, exc.reason, nbytes)
            return
        except (ValueError, TypeError, KeyError) as exc:
            self._reject(node_id, f"malformed reply: {exc}", nbytes)
            return
        finally:
            self.result.decode_seconds += time.perf_counter() - start
        self._seen.add(node_id)
        self._first = self._first or msg
        self.result.accepted += 1
        self.result.received.append(ReceivedUpdate(node_id, nbytes, accepted=True))
        for key in AVERAGED_METRICS:
            self._metric_sums[key] += weight * record_number(metrics, key, 0.0)
        self._metric_sums["num-examples"] = self._metric_sums.get("num-examples", 0.0) + weight

    def finish(
        self, order_key: Callable[[int], tuple[int, int]], *, build_record: bool = True
    ) -> RoundResult:
        """The replies to hand to the strategy, and the round's bookkeeping.

        ``build_record=False`` skips packing a streaming round's mean into the single reply
        (serializing the whole model once more) when the caller uses ``mean_weights`` directly.
        """
        total = self._metric_sums.get("num-examples", 0.0)
        if total > 0:
            self.result.metrics = {k: self._metric_sums[k] / total for k in AVERAGED_METRICS}
        if self._sum is not None and self._first is not None and self._sum.count:
            weights = self._sum.consume_into_weights(self._global)
            self.result.mean_weights = weights
            if build_record:
                self._first.content = RecordDict(
                    {
                        "arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}),
                        "metrics": MetricRecord(
                            {"num-examples": round(total), **self.result.metrics}
                        ),
                    }
                )
                self.result.for_strategy = [self._first]
        else:
            self._dense.sort(key=lambda item: order_key(item[0]))
            self.result.for_strategy = [m for _, m in self._dense]
        return self.result

    def _as_weights(self, msg: Message, wire: object, metrics: MetricRecord) -> Message:
        delta = decode_update(wire)  # type: ignore[arg-type]
        weights = {
            k: np.asarray(v + _numpy(delta[k]), dtype=v.dtype) for k, v in self._global.items()
        }
        msg.content = RecordDict(
            {"arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}), "metrics": metrics}
        )
        return msg

    def _reject(self, node_id: int, reason: str, nbytes: int = 0) -> None:
        self.result.rejected.append(Rejection(node_id, reason))
        if nbytes:
            self.result.received.append(ReceivedUpdate(node_id, nbytes, accepted=False))


def _received_payload(record: Mapping[str, object]) -> bytes | dict[str, object]:
    """The bare payload (unencrypted) or the envelope's record values."""
    if PAYLOAD_KEY in record:
        payload = record[PAYLOAD_KEY]
        if not isinstance(payload, bytes):
            raise TypeError(f"update entry {PAYLOAD_KEY!r} must be bytes")
        return payload
    return dict(record)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _single_metrics(node_id: int, content: RecordDict) -> MetricRecord:
    records = list(content.metric_records.values())
    if len(records) != 1:
        raise InvalidUpdate(node_id, f"expected one MetricRecord, got {len(records)}")
    return records[0]
