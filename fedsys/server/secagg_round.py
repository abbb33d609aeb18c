"""One round of secure aggregation over Flower's Message API (push and pull per stage).

Stage 1 is the strategy's own train messages plus the round's public parameters; stages 2-4
are query messages (``query.secagg_share`` / ``_mask`` / ``_unmask``). Every reply is checked
by :class:`fedsys.secagg.SecAggServer`; a bad or missing one excludes its node with a reason
(in ``metrics.jsonl`` as ``rejected``), and a round that cannot be unmasked ends with the
global model unchanged. The unmasked integer sum is dequantized into the unweighted mean delta
and handed to the strategy as a single reply, exactly like the streaming sum of plain rounds.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    RecordDict,
)
from flwr.serverapp import Grid
from pydantic import ValidationError

from fedsys.config import ExperimentConfig
from fedsys.errors import InvalidUpdate, SecAggAborted, SecAggError, SecAggMessageInvalid
from fedsys.protocol import record_nbytes, record_number
from fedsys.secagg.fixedpoint import FixedPoint
from fedsys.secagg.layout import FlatLayout
from fedsys.secagg.messages import (
    PARAMS_KEY,
    STAGE_KEY,
    STAGE_MASK,
    STAGE_SHARE,
    STAGE_UNMASK,
    Advert,
    PeerKeys,
    RoundParams,
    pack_ids,
    pack_map,
    unpack_map,
)
from fedsys.secagg.server import SecAggServer
from fedsys.server.collect import ReceivedUpdate, Rejection, RoundResult
from fedsys.server.exchange import exchange
from fedsys.server.weights import (
    AVERAGED_METRICS,
    checked_metrics,
    checked_weight,
    strategy_metrics,
)

log = logging.getLogger("fedsys")

RECORD = "secagg"


@dataclass
class SecAggOutcome:
    """The round's result for the loop, plus what only secure aggregation reports."""

    result: RoundResult
    seconds: dict[str, float] = field(default_factory=dict)
    dropped_after_masking: int = 0  # masks committed, input never arrived: recovered by shares
    aborted: str | None = None

    def record_fields(self) -> dict[str, object]:
        return {
            "secagg_seconds": self.seconds,
            "dropped_after_masking": self.dropped_after_masking,
            "secagg_aborted": self.aborted,
        }


class SecAggRound:
    """Drives the four stages for the sampled nodes of one round."""

    def __init__(
        self,
        grid: Grid,
        cfg: ExperimentConfig,
        global_arrays: Mapping[str, np.ndarray],
        *,
        run_id: int,
        rnd: int,
        keep_stragglers: bool,
    ) -> None:
        self.grid = grid
        self.cfg = cfg
        self.global_arrays = global_arrays
        self.rnd = rnd
        self.keep_stragglers = keep_stragglers
        self.layout = FlatLayout.of(global_arrays)
        sa = cfg.secagg
        assert cfg.codec.clip_norm is not None  # the config requires it with secagg
        self.fixed = FixedPoint(
            sa.bits, sa.resolved_quant_bits(cfg.codec), sa.clip_range or cfg.codec.clip_norm
        )
        self.run_id = run_id
        self.result = RoundResult(for_strategy=[], accepted=0)
        # node -> (checked weight, checked averaged metrics), from its advert's MetricRecord
        self.metrics: dict[int, tuple[float, dict[str, float]]] = {}
        self.nbytes: dict[int, int] = {}
        self.server: SecAggServer | None = None
        self.last_reply: Message | None = None

    def run(self, messages: list[Message], *, build_record: bool = True) -> SecAggOutcome:
        """All four stages; ``build_record=False``: the caller uses ``result.mean_weights``."""
        seconds: dict[str, float] = {}
        nodes = sorted({m.metadata.dst_node_id for m in messages})
        self.fixed.check_clients(len(nodes))
        params = RoundParams(
            run_id=self.run_id,
            round=self.rnd,
            seed=os.urandom(16),
            nodes=tuple(nodes),
            degree=self.cfg.secagg.neighbours,
            threshold=self.cfg.secagg.threshold,
            bits=self.fixed.bits,
            quant_bits=self.fixed.quant_bits,
            clip_range=self.fixed.clip_range,
            length=self.layout.length,
        )
        server = self.server = SecAggServer(params)
        stage_timeout = self.cfg.secagg.timeout
        outcome = SecAggOutcome(self.result, seconds)
        try:
            t0 = time.perf_counter()
            for m in messages:
                m.content.config_records["config"][PARAMS_KEY] = params.model_dump_json()
            self._stage(messages, self._on_advert, self.cfg.train.timeout, "train")
            seconds["train_and_advertise"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            requests = {
                node: {"peers": PeerKeys(peers=peers).model_dump_json()}
                for node, peers in server.share_requests().items()
            }
            self._stage(self._queries(STAGE_SHARE, requests), self._on_shares, stage_timeout)
            seconds["share_keys"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            relay: dict[int, dict[str, Any]] = {}
            for node, sealed in server.relay_requests().items():
                src, blobs = pack_map(sealed)
                relay[node] = {"src": src, "sealed": blobs}
            self._stage(self._queries(STAGE_MASK, relay), self._on_masked, stage_timeout)
            seconds["masked_input"] = time.perf_counter() - t0
            outcome.dropped_after_masking = len(server.sealed) - len(server.masked)

            t0 = time.perf_counter()
            unmask = {
                node: {"survivors": pack_ids(survivors), "dropped": pack_ids(dropped)}
                for node, (survivors, dropped) in server.unmask_requests().items()
            }
            self._stage(self._queries(STAGE_UNMASK, unmask), self._on_reveal, stage_timeout)
            seconds["unmask_requests"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            total = server.finish()
            mean = self.fixed.decode(total, divisor=len(server.masked))
            seconds["unmask"] = time.perf_counter() - t0
        except SecAggAborted as exc:
            outcome.aborted = exc.reason
            log.warning("round %d: secure aggregation aborted: %s", self.rnd, exc.reason)
            self.result.accepted = 0
            self._bookkeeping(accepted=set())
            return outcome
        for owner, reason in server.share_problems:
            log.warning("round %d: secagg share problem (owner %d): %s", self.rnd, owner, reason)
        self._hand_to_strategy(mean, server.masked, build_record)
        self._bookkeeping(accepted=server.masked)
        return outcome

    # -- messaging ----------------------------------------------------------------------
    def _queries(self, stage: str, requests: Mapping[int, Mapping[str, Any]]) -> list[Message]:
        out = []
        for node, values in requests.items():
            record = ConfigRecord({STAGE_KEY: stage, "round": self.rnd, **values})
            out.append(
                Message(
                    content=RecordDict({RECORD: record}),
                    dst_node_id=node,
                    message_type=f"{MessageType.QUERY}.{stage}",
                    group_id=str(self.rnd),
                )
            )
        return out

    def _stage(
        self,
        messages: list[Message],
        handle: Callable[[int, Message], None],
        timeout: float,
        name: str | None = None,
    ) -> None:
        def on_reply(reply: Message) -> None:
            node = reply.metadata.src_node_id
            if reply.has_error():
                self._exclude(node, f"client error: {reply.error.reason}")
                return
            self.last_reply = reply
            self.nbytes[node] = self.nbytes.get(node, 0) + sum(
                record_nbytes(r) for r in reply.content.config_records.values()
            )
            try:
                handle(node, reply)
            except SecAggMessageInvalid as exc:
                self._exclude(node, exc.detail)
            except (SecAggError, ValidationError, KeyError, TypeError, ValueError) as exc:
                self._exclude(node, f"malformed {name or 'secagg'} reply: {exc}")

        for node in sorted(exchange(self.grid, messages, on_reply, timeout)):
            self._exclude(
                node, "no reply within " + ("train.timeout" if name else "secagg.timeout")
            )

    def _exclude(self, node: int, reason: str) -> None:
        assert self.server is not None
        self.server.excluded[node] = reason
        self.result.rejected.append(Rejection(node, reason))

    # -- replies -------------------------------------------------------------------------
    def _on_advert(self, node: int, reply: Message) -> None:
        assert self.server is not None
        record = reply.content.config_records[RECORD]
        advert = Advert.model_validate(
            {k: record.get(k) for k in ("c_pk", "s_pk", "b_commit")}, strict=True
        )
        metrics = reply.content.metric_records["metrics"]
        try:  # the weight only averages metrics here (the masked mean counts clients equally)
            weight = checked_weight(
                node,
                None,
                metrics.get("num-examples"),
                float(self.cfg.defense.max_num_examples),
                signed=False,
            )
            averaged = checked_metrics(node, metrics)
        except InvalidUpdate as exc:
            raise SecAggMessageInvalid(node, exc.reason) from None
        if not self.keep_stragglers and record_number(metrics, "straggler", 0) > 0:
            self.result.stragglers_dropped += 1
            return  # leaves the round before any mask involves it
        self.server.add_advert(node, advert)
        self.metrics[node] = (weight, averaged)

    def _on_shares(self, node: int, reply: Message) -> None:
        assert self.server is not None
        record = reply.content.config_records[RECORD]
        self.server.add_shares(node, unpack_map(record.get("dst"), record.get("sealed")))

    def _on_masked(self, node: int, reply: Message) -> None:
        assert self.server is not None
        masked = reply.content.config_records[RECORD].get("masked")
        start = time.perf_counter()
        self.server.add_masked(node, masked)
        self.result.decode_seconds += time.perf_counter() - start

    def _on_reveal(self, node: int, reply: Message) -> None:
        assert self.server is not None
        record = reply.content.config_records[RECORD]
        problems = json.loads(str(record.get("problems", "{}")))
        self.server.add_reveal(
            node,
            unpack_map(record.get("b_ids"), record.get("b_shares")),
            unpack_map(record.get("sk_ids"), record.get("sk_shares")),
            {int(k): str(v) for k, v in problems.items()},
        )

    # -- results -------------------------------------------------------------------------
    def _hand_to_strategy(
        self, mean: np.ndarray, counted: Iterable[int], build_record: bool
    ) -> None:
        """One reply holding ``global + mean delta`` and the summed weight, as in plain rounds."""
        counted = sorted(counted)
        total = sum(self.metrics[n][0] for n in counted)
        averaged = {
            key: sum(self.metrics[n][0] * self.metrics[n][1][key] for n in counted) / total
            for key in AVERAGED_METRICS
        }
        weights = self.layout.add_to(self.global_arrays, mean)
        self.result.mean_weights = weights
        self.result.metrics = averaged
        self.result.accepted = len(counted)
        if build_record and self.last_reply is not None:
            reply = self.last_reply
            reply.content = RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(v) for k, v in weights.items()}),
                    "metrics": strategy_metrics(total, averaged),
                }
            )
            self.result.for_strategy = [reply]

    def _bookkeeping(self, accepted: set[int]) -> None:
        self.result.received = [
            ReceivedUpdate(node, nbytes, accepted=node in accepted)
            for node, nbytes in sorted(self.nbytes.items())
        ]
