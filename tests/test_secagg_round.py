"""The server's secagg round over a Grid, with the real ClientApp stage handlers behind it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.serverapp import Grid

from fedsys.client import secagg_handler as client_stages
from fedsys.client.secagg_handler import clip_and_quantize
from fedsys.config import ExperimentConfig, build_config
from fedsys.secagg.fixedpoint import FixedPoint
from fedsys.secagg.layout import FlatLayout
from fedsys.secagg.messages import RoundParams
from fedsys.server.secagg_round import SecAggRound

pytestmark = pytest.mark.usefixtures("task_identity")

RUN = 11
ROUND = 4
GLOBAL = {
    "w": np.linspace(-1, 1, 300, dtype=np.float32).reshape(20, 15),
    "b": np.zeros(7, dtype=np.float32),
    "count": np.array(3, dtype=np.int64),  # not a float: passes through unchanged
}
Tamper = Callable[[Message, Message], Message | None]  # (request, reply) -> sent reply


def _cfg(**secagg: object) -> ExperimentConfig:
    extra = [f"secagg.{k}={v}" for k, v in secagg.items()]
    return build_config(
        {},
        [
            "data.num_partitions=10",
            "secagg.enabled=true",
            "codec.clip_norm=2.0",
            "secagg.timeout=0.3",
            "train.timeout=0.3",
            *extra,
        ],
    )


def _delta(node: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(node)
    return {
        "w": torch.from_numpy(rng.normal(0, 0.05, (20, 15)).astype(np.float32)),
        "b": torch.from_numpy(rng.normal(0, 0.05, 7).astype(np.float32)),
        "count": torch.tensor(0, dtype=torch.int64),
    }


class NodesGrid(Grid):
    """Answers each pushed message at once by running the ClientApp's stage handler."""

    def __init__(self, cfg: ExperimentConfig, state_dir: Path, tamper: Tamper | None) -> None:
        self.cfg = cfg
        self.state_dir = state_dir
        self.tamper = tamper
        self.contexts: dict[int, Context] = {}
        self.replies: dict[str, Message] = {}
        self.count = 0

    def _answer(self, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        ctx = self.contexts.setdefault(
            node,
            Context(run_id=RUN, node_id=node, node_config={}, state=RecordDict(), run_config={}),
        )
        kind = msg.metadata.message_type
        if kind == "train":
            metrics = {"num-examples": 10, "train_loss": 1.0, "straggler": 0}
            return client_stages.setup(
                msg, ctx, self.cfg, _delta(node), metrics, state_dir=self.state_dir, seed=1
            )
        handler = {
            "query.secagg_share": client_stages.share,
            "query.secagg_mask": client_stages.mask,
            "query.secagg_unmask": client_stages.unmask,
        }[kind]
        return handler(msg, ctx)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            self.count += 1
            mid = f"m{self.count}"
            msg.metadata.__dict__["_message_id"] = mid
            ids.append(mid)
            reply = self._answer(msg)
            if self.tamper is not None:
                reply = self.tamper(msg, reply)
            if reply is not None:
                self.replies[mid] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(mid) for mid in list(message_ids) if mid in self.replies]

    # unused by the round
    def set_run(self, run_id: object) -> None: ...  # type: ignore[override]
    def create_message(self, *args: object, **kw: object) -> Message:  # type: ignore[override]
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        raise NotImplementedError

    def send_and_receive(self, *args: object, **kw: object) -> Iterable[Message]:  # type: ignore[override]
        raise NotImplementedError

    @property
    def run(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError


def _round(cfg: ExperimentConfig, nodes: list[int], tmp_path: Path, tamper: Tamper | None = None):  # type: ignore[no-untyped-def]
    grid = NodesGrid(cfg, tmp_path, tamper)
    train_config = ConfigRecord({"fedsys.config": cfg.to_json(), "server-round": ROUND})
    messages = [
        Message(content=RecordDict({"config": train_config}), dst_node_id=n, message_type="train")
        for n in nodes
    ]
    sa = SecAggRound(grid, cfg, GLOBAL, run_id=RUN, rnd=ROUND, keep_stragglers=False)
    return sa.run(messages)


def _expected(cfg: ExperimentConfig, counted: list[int]) -> dict[str, np.ndarray]:
    """global + mean of the same clipped, quantized deltas, summed in plain integers."""
    fp = FixedPoint(cfg.secagg.bits, cfg.secagg.resolved_quant_bits(cfg.codec), 2.0)
    layout = FlatLayout.of(GLOBAL)
    total = np.zeros(layout.length, dtype=fp.dtype)
    for n in counted:
        flat = layout.flatten(_delta(n))
        norm = float(np.linalg.norm(flat.astype(np.float64)))
        if norm > 2.0:
            flat *= np.float32(2.0 / norm)
        total += fp.encode(flat)
    return layout.add_to(GLOBAL, fp.decode(total, divisor=len(counted)))


NODES = [101, 202, 303, 404, 505, 606, 707, 808, 909, 1010]


def _check_equal(got: dict[str, np.ndarray] | None, want: dict[str, np.ndarray]) -> None:
    assert got is not None and set(got) == set(want)
    for key in want:
        assert got[key].dtype == want[key].dtype
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_round_mean_is_exactly_the_mean_of_the_quantized_deltas(tmp_path: Path) -> None:
    cfg = _cfg(neighbours=4)
    out = _round(cfg, NODES, tmp_path)
    assert out.aborted is None and not out.result.rejected
    assert out.result.accepted == 10 and len(out.result.for_strategy) == 1
    _check_equal(out.result.mean_weights, _expected(cfg, NODES))
    assert out.result.metrics["train_loss"] == pytest.approx(1.0)
    assert set(out.seconds) >= {"share_keys", "masked_input", "unmask"}
    assert not list(tmp_path.rglob("*.input"))  # inputs removed once masked


def test_dropouts_after_key_sharing_are_recovered(tmp_path: Path) -> None:
    cfg = _cfg(neighbours=6)
    gone = {202, 505, 909}

    def tamper(request: Message, reply: Message) -> Message | None:
        kind, node = request.metadata.message_type, request.metadata.dst_node_id
        return None if kind == "query.secagg_mask" and node in gone else reply

    out = _round(cfg, NODES, tmp_path, tamper)
    assert out.dropped_after_masking == 3 and out.result.accepted == 7
    assert {r.node_id for r in out.result.rejected} == gone
    assert all("no reply within secagg.timeout" in r.reason for r in out.result.rejected)
    _check_equal(out.result.mean_weights, _expected(cfg, [n for n in NODES if n not in gone]))


def test_malformed_replies_exclude_their_sender_with_a_reason(tmp_path: Path) -> None:
    cfg = _cfg()

    def tamper(request: Message, reply: Message) -> Message | None:
        kind, node = request.metadata.message_type, request.metadata.dst_node_id
        record = reply.content.config_records.get("secagg")
        if kind == "query.secagg_mask" and node == 303 and record is not None:
            record["masked"] = bytes(record["masked"])[:-4]  # type: ignore[index]
        if kind == "query.secagg_share" and node == 404 and record is not None:
            record["sealed"] = [b"x" * 3 for _ in record["sealed"]]  # type: ignore[union-attr]
        if kind == "train" and node == 505:
            return Message(Error(code=1, reason="out of memory"), reply_to=request)
        if kind == "train" and node == 606 and record is not None:
            record["c_pk"] = b"short"
        return reply

    out = _round(cfg, NODES, tmp_path, tamper)
    reasons = {r.node_id: r.reason for r in out.result.rejected}
    assert set(reasons) == {303, 404, 505, 606}
    assert "masked input has 1224 bytes, expected 1228" in reasons[303]
    assert "malformed share for node" in reasons[404]
    assert "client error: out of memory" in reasons[505]
    assert "malformed train reply" in reasons[606]
    counted = [n for n in NODES if n not in reasons]
    assert out.result.accepted == len(counted)
    _check_equal(out.result.mean_weights, _expected(cfg, counted))


def test_too_few_survivors_end_the_round_without_a_model(tmp_path: Path) -> None:
    cfg = _cfg(neighbours=4, threshold=1.0)
    gone = set(NODES[:8])

    def tamper(request: Message, reply: Message) -> Message | None:
        kind, node = request.metadata.message_type, request.metadata.dst_node_id
        return None if kind == "query.secagg_mask" and node in gone else reply

    out = _round(cfg, NODES, tmp_path, tamper)
    assert out.aborted is not None and "masked inputs arrived" in out.aborted
    assert out.result.accepted == 0 and out.result.mean_weights is None
    assert not out.result.for_strategy


def test_error_feedback_carries_what_rounding_dropped() -> None:
    params = RoundParams(
        run_id=1,
        round=1,
        seed=b"s" * 16,
        nodes=(1, 2),
        threshold=0.5,
        bits=16,
        quant_bits=4,
        clip_range=0.05,
        length=307,
    )
    fp = FixedPoint(16, 4, 0.05)
    delta = _delta(7)
    flat = FlatLayout.of(delta).flatten(delta)
    residual = np.zeros(params.length, np.float32)
    sent = np.zeros(params.length, np.float64)
    for _ in range(20):
        codes, residual = clip_and_quantize(delta, params, 100.0, None, residual)
        assert residual is not None
        sent += fp.decode(codes)
    # inside the range, what was sent over 20 rounds is 20 x the update up to one rounding,
    # though 4-bit codes round each value by up to half a step every round
    inside = np.abs(flat) < 0.05 - fp.scale
    assert np.max(np.abs(residual)) <= fp.scale / 2 + 1e-6
    drift = np.abs(sent - 20 * flat)[inside]
    assert drift.max() <= fp.scale / 2 + 1e-5
    once = np.abs(fp.decode(fp.encode(flat)) - flat)[inside]
    assert drift.mean() < 20 * once.mean() / 5
    codes, none = clip_and_quantize(delta, params, 100.0, None)
    assert none is None and np.abs(fp.decode(codes)).max() <= 0.05 + 1e-7
