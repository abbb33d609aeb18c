"""The server's reply collector: validation before anything counts, streaming equals dense."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict

from fedsys.codec import Quantize, UpdatePolicy, encode_update
from fedsys.crypto import (
    AggregatorKeys,
    ClientKeys,
    RoundBinding,
    generate_exchange_key,
    generate_signing_key,
    seal,
)
from fedsys.server.collect import RoundCollector

pytestmark = pytest.mark.usefixtures("task_identity")

GLOBAL = {
    "w": np.linspace(-1, 1, 600, dtype=np.float32).reshape(20, 30),
    "b": np.zeros(30, np.float32),
    "steps": np.array(3, dtype=np.int64),
}
RUN, ROUND = 77, 4


def _delta(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "w": torch.randn(20, 30, generator=gen) * 0.01,
        "b": torch.randn(30, generator=gen) * 0.01,
        "steps": torch.tensor(5, dtype=torch.int64),
    }


def _reply(node: int, record: dict[str, object], examples: int = 10, **extra: int) -> Message:
    instruction = Message(content=RecordDict(), dst_node_id=node, message_type="train")
    metrics = MetricRecord({"num-examples": examples, "train_loss": 1.0, **extra})
    content = RecordDict({"update": ConfigRecord(record), "metrics": metrics})  # type: ignore[arg-type]
    return Message(content=content, reply_to=instruction)


def _plain(node: int, seed: int, examples: int = 10, **extra: int) -> Message:
    stated = examples if examples > 0 else None  # a payload cannot state a weight of 0
    payload = encode_update(_delta(seed), [Quantize(bits=8)], num_examples=stated).payload
    return _reply(node, {"payload": payload}, examples, **extra)


def _collector(streaming: bool, **kw: object) -> RoundCollector:
    args: dict[str, object] = {
        "binding": lambda node: RoundBinding(RUN, ROUND, node),
        "keys": None,
        "client_ids": {},
        "keep_stragglers": False,
        "streaming": streaming,
    }
    args.update(kw)
    policy = args.pop("policy", UpdatePolicy(require_envelope=False))
    return RoundCollector(GLOBAL, policy, **args)  # type: ignore[arg-type]


def _weights(msg: Message) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in msg.content.array_records["arrays"].items()}


def test_streaming_mean_equals_dense_weighted_mean() -> None:
    replies = [(_plain(1, 1, 10), _plain(1, 1, 10)), (_plain(2, 2, 30), _plain(2, 2, 30))]
    streaming, dense = _collector(True), _collector(False)
    for a, b in replies:
        streaming.offer(a)
        dense.offer(b)
    s = streaming.finish(lambda n: (0, n))
    d = dense.finish(lambda n: (0, n))
    assert s.accepted == d.accepted == 2 and not s.rejected
    assert len(s.for_strategy) == 1 and len(d.for_strategy) == 2
    merged = _weights(s.for_strategy[0])
    per_client = [_weights(m) for m in d.for_strategy]
    expected = (per_client[0]["w"] * 10 + per_client[1]["w"] * 30) / 40
    np.testing.assert_allclose(merged["w"], expected, atol=1e-6)
    assert merged["steps"] == 8 and merged["w"].dtype == np.float32
    assert s.for_strategy[0].content.metric_records["metrics"]["num-examples"] == 40
    assert s.received[0].nbytes < GLOBAL["w"].size * 4  # int8 on the wire


def test_bad_replies_are_rejected_with_reasons_and_change_nothing() -> None:
    nan = _delta(3)
    nan["w"][0, 0] = float("nan")
    collector = _collector(True, policy=UpdatePolicy(require_envelope=False, max_norm=10.0))
    instruction = Message(content=RecordDict(), dst_node_id=9, message_type="train")
    collector.offer(Message(Error(code=1, reason="CUDA out of memory"), reply_to=instruction))
    collector.offer(_reply(2, {"payload": b"not a wire payload"}))
    collector.offer(_reply(3, {"payload": encode_update(_delta(3), []).payload[:-7]}))
    big = {k: v * 1e4 for k, v in _delta(4).items() if k != "steps"} | {"steps": _delta(4)["steps"]}
    collector.offer(_reply(4, {"payload": encode_update(big, []).payload}))
    collector.offer(_plain(5, 5, examples=0))
    collector.offer(_plain(6, 6, straggler=1))
    collector.offer(_plain(7, 7))
    collector.offer(_plain(7, 8))  # second update from node 7
    result = collector.finish(lambda n: (0, n))
    assert result.accepted == 1 and result.stragglers_dropped == 1
    reasons = {r.node_id: r.reason for r in result.rejected}
    assert "CUDA out of memory" in reasons[9]
    assert set(reasons) == {9, 2, 3, 4, 5, 7}
    assert "norm" in reasons[4] and "num-examples" in reasons[5] and "second" in reasons[7]
    only = _weights(result.for_strategy[0])
    single = _collector(False)
    single.offer(_plain(7, 7))
    alone = _weights(single.finish(lambda n: (0, n)).for_strategy[0])
    np.testing.assert_allclose(only["w"], alone["w"], atol=1e-6)


def test_envelopes_are_checked_against_round_sender_and_key() -> None:
    server = generate_exchange_key()
    alice, mallory = generate_signing_key(), generate_signing_key()
    keys = AggregatorKeys(server, {"alice": alice.public_key()})
    payload = encode_update(_delta(1), [Quantize(bits=8)], num_examples=10).payload

    def sealed(node: int, who: str, key: object, rnd: int = ROUND) -> Message:
        env = seal(payload, ClientKeys(who, key, server.public_key()), RoundBinding(RUN, rnd, node))  # type: ignore[arg-type]
        return _reply(node, dict(env.to_record_values()))

    collector = _collector(
        True,
        keys=keys,
        client_ids={1: "alice", 2: "alice", 3: "alice", 4: "mallory"},
        policy=UpdatePolicy(),
    )
    collector.offer(sealed(2, "alice", alice, rnd=ROUND - 1))  # replayed from last round
    collector.offer(sealed(3, "alice", mallory))  # signed with the wrong key
    collector.offer(sealed(4, "mallory", mallory))  # not on the allow-list
    collector.offer(_plain(5, 5))  # unencrypted where envelopes are required
    tampered = sealed(6, "alice", alice)
    frames = tampered.content.config_records["update"]["frames"]
    assert isinstance(frames, list)
    frames[0] = bytes([frames[0][0] ^ 1]) + frames[0][1:]
    tampered.content.config_records["update"]["frames"] = frames
    collector.offer(tampered)
    collector.offer(sealed(1, "alice", alice))
    result = collector.finish(lambda n: (0, n))
    assert result.accepted == 1
    assert {r.node_id for r in result.rejected} == {2, 3, 4, 5, 6}
    assert all(r.reason for r in result.rejected)


def test_streaming_mean_weights_match_the_strategy_record() -> None:
    with_record, without = _collector(True), _collector(True)
    for node, examples in ((1, 10), (2, 30)):
        with_record.offer(_plain(node, node, examples))
        without.offer(_plain(node, node, examples))
    packed = with_record.finish(lambda n: (0, n))
    bare = without.finish(lambda n: (0, n), build_record=False)
    assert bare.for_strategy == [] and bare.mean_weights is not None
    assert packed.mean_weights is not None
    for name, value in _weights(packed.for_strategy[0]).items():
        np.testing.assert_array_equal(bare.mean_weights[name], value)
        assert bare.mean_weights[name].dtype == GLOBAL[name].dtype
    # the mean moved the float weights away from the global model
    assert not np.array_equal(bare.mean_weights["w"], GLOBAL["w"])


def test_malformed_replies_are_typed_rejections_not_internal_errors() -> None:
    collector = _collector(True)
    collector.offer(_reply(1, {"payload": "text, not bytes"}))  # wrong type in the record
    collector.offer(_reply(2, {"payload": b"\x00garbage"}))
    collector.offer(_reply(3, {"payload": encode_update(_delta(3), []).payload[:40]}))
    collector.offer(_reply(4, {"header": b"{}", "frames": [b"x"]}))  # envelope without keys
    wrong_metric = _plain(5, 5)
    wrong_metric.content.metric_records["metrics"]["straggler"] = [1.0, 2.0]
    collector.offer(wrong_metric)
    sealed_to_nobody = seal(
        encode_update(_delta(6), [], num_examples=10).payload,
        ClientKeys("alice", generate_signing_key(), generate_exchange_key().public_key()),
        RoundBinding(RUN, ROUND, 6),
    )
    collector.offer(_reply(6, dict(sealed_to_nobody.to_record_values())))  # run not encrypted
    collector.offer(_plain(7, 7))
    result = collector.finish(lambda n: (0, n))
    assert result.accepted == 1 and result.internal_errors == 0
    reasons = {r.node_id: r.reason for r in result.rejected}
    assert set(reasons) == {1, 2, 3, 4, 5, 6}
    assert "must be bytes, got str" in reasons[1] and "'straggler'" in reasons[5]
    assert "codec.encrypt is off" in reasons[6]
    assert not any(r.internal or "internal" in r.reason for r in result.rejected)


def test_an_unexpected_exception_is_reported_as_internal_not_as_a_bad_reply(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import fedsys.server.collect as collect

    real = collect.open_update

    def broken(received: object, *args: object, **kwargs: object) -> object:
        if isinstance(received, bytes) and received == broken_payload:
            raise KeyError("a bug in the server")
        return real(received, *args, **kwargs)  # type: ignore[arg-type]

    broken_payload = _plain(1, 1).content.config_records["update"]["payload"]
    monkeypatch.setattr(collect, "open_update", broken)
    collector = _collector(True)
    with caplog.at_level("ERROR", logger="fedsys"):
        collector.offer(_reply(1, {"payload": broken_payload}))
        collector.offer(_plain(2, 2))
    result = collector.finish(lambda n: (0, n))
    assert result.accepted == 1 and result.internal_errors == 1
    (rejection,) = result.rejected
    assert rejection.node_id == 1 and rejection.internal
    assert rejection.reason == "internal error: KeyError"
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "node 1" in record.getMessage() and record.exc_info is not None
