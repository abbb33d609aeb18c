"""Receive one round's replies as they arrive: validate, decode, and add them up.

Each reply is checked before it counts (sender, signature, round and run, frames, layout,
decoded values finite and representable, norm, size; see ``fedsys.codec.validate``; the
weight read from inside the payload, the metrics finite; see ``fedsys.server.weights``), then
judged by the adaptive norm bound (``fedsys.server.norm_bound``). For the linear strategies
(FedAvg, FedProx, FedAvgM and the FedOpt family) the decoded delta goes straight into a
preallocated running sum, so the server holds O(model) memory whatever the number of clients;
the strategy then receives a single reply carrying ``global + weighted mean delta`` with the
total weight, which its weighted average returns unchanged. Robust strategies and the DP
wrappers need every update, so those are decoded to dense weights, one per client.

Updates above the previous round's norm bound (all of them in a run's first round) wait, as
their validated payloads, until the round's replies are all in and its own median norm is
known (see ``fedsys.server.norm_bound``).

Every expected way a reply can fail is a typed error (``InvalidUpdate`` or a ``CodecError``)
and becomes a rejection with its reason. Any other exception is a bug in the server, not a
bad reply: it still never ends the round, but it is logged with its traceback at ERROR and
recorded as an ``internal error`` rejection (``Rejection.internal``), not passed off as a
malformed reply.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from fedsys.codec import StreamingSum, UpdatePolicy, decode_update, template_from
from fedsys.codec.limits import PayloadLimits
from fedsys.codec.validate import CheckedUpdate
from fedsys.crypto import AggregatorKeys, RoundBinding
from fedsys.defense_config import DefenseConfig
from fedsys.errors import CodecError, InvalidUpdate, WireFormatError
from fedsys.protocol import PAYLOAD_KEY, record_nbytes, record_number
from fedsys.server.direction import direction_threshold
from fedsys.server.norm_bound import NormBound
from fedsys.server.unseal import open_update
from fedsys.server.weights import (
    AVERAGED_METRICS,
    checked_metrics,
    checked_weight,
    strategy_metrics,
)

log = logging.getLogger("fedsys")

__all__ = ["AVERAGED_METRICS", "ReceivedUpdate", "Rejection", "RoundCollector", "RoundResult"]


@dataclass(frozen=True)
class Rejection:
    node_id: int
    reason: str
    internal: bool = False  # the server failed on this reply (a bug), not the reply's fault


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
    # L2 norms of the accepted updates (when measured): the next round's norm reference.
    accepted_norms: list[float] = field(default_factory=list)
    clipped: int = 0  # updates scaled down to the norm bound (defense.norm_action=clip)

    @property
    def internal_errors(self) -> int:
        """Replies the server failed on (logged with a traceback): each one is a bug."""
        return sum(r.internal for r in self.rejected)


@dataclass(frozen=True)
class Candidate:
    """A reply that passed every check but the norm bound."""

    node_id: int
    msg: Message
    checked: CheckedUpdate
    weight: float
    metrics: dict[str, float]
    nbytes: int


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
        defense: DefenseConfig | None = None,
        norm_bound: NormBound | None = None,
        declared_examples: Mapping[int, int] | None = None,
        expected_replies: int = 0,
        seen_payloads: set[bytes] | None = None,
    ) -> None:
        self._global = global_arrays
        self._template = template_from(global_arrays)
        self._limits = PayloadLimits.for_model(self._template)
        self._defense = defense or DefenseConfig(norm_bound="none", direction_check=False)
        self._bound = norm_bound or NormBound(self._defense)
        if self._bound.enabled and not policy.measure_norm:
            policy = policy.model_copy(update={"measure_norm": True})
        # The direction check holds the round's accepted updates (their validated payloads)
        # until it ends; decided up front from the largest payloads the round could bring.
        budget = self._defense.hold_budget_mb << 20
        self._directions = (
            self._defense.direction_check
            and streaming
            and expected_replies * self._limits.payload_bytes <= budget
        )
        if self._directions and not policy.measure_norm:
            policy = policy.model_copy(update={"measure_norm": True})
        self._accepted: list[tuple[Candidate, float]] = []
        self._policy = policy
        self._binding = binding
        self._keys = keys
        self._client_ids = client_ids
        self._declared = declared_examples or {}
        # SHA-256 of every payload validated in this run (shared across rounds): a client that
        # resends an earlier update, even sealed anew, is refused as a replay.
        self._seen_payloads = seen_payloads if seen_payloads is not None else set()
        self._keep_stragglers = keep_stragglers
        self._sum = StreamingSum(self._template) if streaming else None
        self._dense: list[tuple[int, Message]] = []
        self._waiting: list[Candidate] = []  # above the previous bound: decided in finish()
        self._norms: list[float] = []  # every validated update's norm: the round's median
        self._first: Message | None = None
        self._seen: set[int] = set()
        self._metric_sums = dict.fromkeys(AVERAGED_METRICS, 0.0)
        self._total_weight = 0.0
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
                raise InvalidUpdate(node_id, self._missing_update_reason(msg.content))
            nbytes = record_nbytes(record)
            metrics = _single_metrics(node_id, msg.content)
            if node_id in self._seen:
                raise InvalidUpdate(node_id, "second update from this node in the same round")
            self._seen.add(node_id)
            if not self._keep_stragglers and _straggler(node_id, metrics):
                self.result.stragglers_dropped += 1
                self.result.received.append(ReceivedUpdate(node_id, nbytes, accepted=False))
                return
            checked = open_update(
                _received_payload(record),
                self._template,
                self._policy,
                keys=self._keys,
                expect=self._binding(node_id),
                client_id=self._client_ids.get(node_id),
                limits=self._limits,
            )
            if checked.digest in self._seen_payloads:
                raise InvalidUpdate(
                    node_id, "update repeats a payload already received in this run (a replay)"
                )
            self._seen_payloads.add(checked.digest)
            weight = checked_weight(
                node_id,
                checked.num_examples,
                metrics.get("num-examples"),
                self._weight_cap(node_id),
                signed=True,
            )
            averaged = checked_metrics(node_id, metrics)
            # The validated payload is all that is kept: the reply's own records (for an
            # envelope, its ciphertext) go now, not when a held update is finally decided.
            msg.content = RecordDict()
            candidate = Candidate(node_id, msg, checked, weight, averaged, nbytes)
            if candidate.checked.norm is not None:
                self._norms.append(candidate.checked.norm)
            if self._bound.within_previous(candidate.checked.norm):
                self._judge(candidate, None)
            else:
                self._waiting.append(candidate)
        except (InvalidUpdate, CodecError) as exc:
            self._reject(node_id, exc.reason, nbytes)
        except Exception as exc:  # a bug; still, no reply may take the round down
            self._internal_error(node_id, exc, nbytes)
        finally:
            self.result.decode_seconds += time.perf_counter() - start

    def _missing_update_reason(self, content: RecordDict) -> str:
        """What a plain Flower client sent, what the run requires, and how to comply."""
        kinds = (
            ("arrays", content.array_records),
            ("metrics", content.metric_records),
            ("config", content.config_records),
        )
        sent = ", ".join(f"{kind} {name!r}" for kind, names in kinds for name in names)
        need = (
            "sealed fedsys updates (codec.encrypt=true: the delta in fedsys's wire format, "
            "sealed to the aggregator key that each train message carries)"
            if self._policy.require_envelope
            else f"fedsys updates (the delta in fedsys's wire format under {PAYLOAD_KEY!r})"
        )
        return (
            f"reply carries no 'update' record (it sent {sent or 'nothing'}): this run requires "
            f"{need} in a config record named 'update'; a plain Flower ClientApp cannot join "
            "it. Run the fedsys ClientApp (fedsys.app:client_app; on a deployed node, "
            "`fedsys client`)"
        )

    def _weight_cap(self, node_id: int) -> float:
        declared = self._declared.get(node_id)
        cap = float(self._defense.max_num_examples)
        return min(cap, float(declared)) if declared else cap

    def _judge(self, c: Candidate, reference: float | None) -> None:
        """Apply the norm bound, then count the update (or reject it with the reason)."""
        verdict = self._bound.decide(c.checked.norm, reference)
        if not verdict.accepted:
            self._reject(c.node_id, verdict.reason or "rejected", c.nbytes)
            return
        try:
            if self._sum is not None:
                self._sum.add(c.checked.wire, c.weight, scale=verdict.scale)
            else:
                self._dense.append((c.node_id, self._as_weights(c, verdict.scale)))
        except CodecError as exc:
            self._reject(c.node_id, exc.reason, c.nbytes)
            return
        except Exception as exc:  # a bug; still, no reply may take the round down
            self._internal_error(c.node_id, exc, c.nbytes)
            return
        if self._directions:
            self._accepted.append((c, verdict.scale))
        if verdict.scale != 1.0:
            self.result.clipped += 1
        if c.checked.norm is not None:
            self.result.accepted_norms.append(c.checked.norm * verdict.scale)
        self._first = self._first or c.msg
        self.result.accepted += 1
        self.result.received.append(ReceivedUpdate(c.node_id, c.nbytes, accepted=True))
        for key in AVERAGED_METRICS:
            self._metric_sums[key] += c.weight * c.metrics[key]
        self._total_weight += c.weight

    def _decide_waiting(self, order_key: Callable[[int], tuple[int, int]]) -> None:
        """Judge the updates held back against the round's own median norm as well."""
        waiting, self._waiting = self._waiting, []
        current = NormBound.median(self._norms)
        for c in sorted(waiting, key=lambda c: order_key(c.node_id)):
            self._judge(c, current)

    def _check_directions(self, order_key: Callable[[int], tuple[int, int]]) -> None:
        """Reject accepted updates pointing against the sum of the others (sign flips).

        Every cosine is taken against the same final sum, leave-one-out by scalar algebra, so
        the decisions do not depend on arrival order; rejected updates are then subtracted
        from the sums exactly (float64). An update is refused when its cosine is below
        ``min_cosine`` and, when ``min_cosine_spread`` is set, also an outlier among the
        round's cosines (``fedsys.server.direction``)."""
        if self._sum is None or len(self._accepted) < 3:
            return
        total_sq = self._sum.square()
        scored: list[tuple[Candidate, float, float]] = []
        for c, scale in sorted(self._accepted, key=lambda item: order_key(item[0].node_id)):
            norm = c.checked.norm
            if norm is None or norm <= 0:
                continue
            share, own_sq = c.weight * scale, norm * norm
            dot = self._sum.dot(c.checked.wire)
            others_sq = total_sq - 2 * share * dot + share * share * own_sq
            if others_sq <= 1e-30 * max(total_sq, 1e-300):
                continue
            scored.append((c, scale, (dot - share * own_sq) / math.sqrt(own_sq * others_sq)))
        threshold = direction_threshold(
            [cosine for _, _, cosine in scored],
            self._defense.min_cosine,
            self._defense.min_cosine_spread,
        )
        refused = [item for item in scored if item[2] < threshold]
        for c, scale, cosine in refused:
            self._sum.remove(c.checked.wire, c.weight, scale=scale)
            self._unaccept(c, scale)
            self._reject(
                c.node_id,
                f"update points against the round's other updates (cosine similarity "
                f"{cosine:.3f} < {threshold:.3f}; defense.direction_check)",
                c.nbytes,
            )
        self._accepted = []

    def _unaccept(self, c: Candidate, scale: float) -> None:
        """Take back the bookkeeping of an update counted in :meth:`_judge`."""
        self.result.accepted -= 1
        self.result.received = [
            r for r in self.result.received if not (r.node_id == c.node_id and r.accepted)
        ]
        if c.checked.norm is not None:
            self.result.accepted_norms.remove(c.checked.norm * scale)
        if scale != 1.0:
            self.result.clipped -= 1
        for key in AVERAGED_METRICS:
            self._metric_sums[key] -= c.weight * c.metrics[key]
        self._total_weight -= c.weight

    def finish(
        self, order_key: Callable[[int], tuple[int, int]], *, build_record: bool = True
    ) -> RoundResult:
        """The replies to hand to the strategy, and the round's bookkeeping.

        ``build_record=False`` skips packing a streaming round's mean into the single reply
        (serializing the whole model once more) when the caller uses ``mean_weights`` directly.
        """
        self._decide_waiting(order_key)
        self._check_directions(order_key)
        total = self._total_weight
        if total > 0:
            self.result.metrics = {k: self._metric_sums[k] / total for k in AVERAGED_METRICS}
        if self._sum is not None and self._first is not None and self._sum.count:
            weights = self._sum.consume_into_weights(self._global)
            self.result.mean_weights = weights
            if build_record:
                self._first.content = RecordDict(
                    {
                        "arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}),
                        "metrics": strategy_metrics(total, self.result.metrics),
                    }
                )
                self.result.for_strategy = [self._first]
        else:
            self._dense.sort(key=lambda item: order_key(item[0]))
            self.result.for_strategy = [m for _, m in self._dense]
        return self.result

    def _as_weights(self, c: Candidate, scale: float) -> Message:
        delta = decode_update(c.checked.wire)
        weights = {}
        for k, v in self._global.items():
            d = _numpy(delta[k])
            if scale != 1.0 and d.dtype.kind == "f":
                d = d * np.asarray(scale, dtype=d.dtype)
            weights[k] = np.asarray(v + d, dtype=v.dtype)
        c.msg.content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}),
                "metrics": strategy_metrics(c.weight, c.metrics),
            }
        )
        return c.msg

    def _reject(
        self, node_id: int, reason: str, nbytes: int = 0, *, internal: bool = False
    ) -> None:
        self.result.rejected.append(Rejection(node_id, reason, internal))
        if nbytes:
            self.result.received.append(ReceivedUpdate(node_id, nbytes, accepted=False))

    def _internal_error(self, node_id: int, exc: Exception, nbytes: int) -> None:
        """An exception no check raises on purpose: the server's fault, shown as such."""
        log.error(
            "internal error while checking the reply of node %d (a bug, not a bad reply)",
            node_id,
            exc_info=exc,
        )
        self._reject(node_id, f"internal error: {type(exc).__name__}", nbytes, internal=True)


def _received_payload(record: Mapping[str, object]) -> bytes | dict[str, object]:
    """The bare payload (unencrypted) or the envelope's record values."""
    if PAYLOAD_KEY in record:
        payload = record[PAYLOAD_KEY]
        if not isinstance(payload, bytes):
            raise WireFormatError(
                f"update entry {PAYLOAD_KEY!r} must be bytes, got {type(payload).__name__}"
            )
        return payload
    return dict(record)


def _straggler(node_id: int, metrics: MetricRecord) -> bool:
    """Whether the reply says it stopped early (``straggler`` > 0); a non-number is refused."""
    try:
        return record_number(metrics, "straggler", 0) > 0
    except ValueError as exc:
        raise InvalidUpdate(node_id, str(exc)) from None


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _single_metrics(node_id: int, content: RecordDict) -> MetricRecord:
    records = list(content.metric_records.values())
    if len(records) != 1:
        raise InvalidUpdate(node_id, f"expected one MetricRecord, got {len(records)}")
    return records[0]
