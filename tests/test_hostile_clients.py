"""A genuine but hostile client (a valid, allow-listed key) cannot poison, stall or crash the
server: every reply ends as an accepted update with finite, bounded values or a typed
rejection with a reason, and the aggregate is always a finite model.

The mutation tests feed real payloads, changed the way an attacker would (bytes, header,
manifest fields, claimed sizes), through the server's real path (``RoundCollector.offer``,
envelopes sealed with the client's real key) and check that invariant for every input.
"""

from __future__ import annotations

import contextlib
import json
import math
import tracemalloc
import zlib
from collections.abc import Callable

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsys.client.attack import decompression_bomb, forged_payload
from fedsys.codec import Quantize, TopK, UpdatePolicy, check_payload, encode_update, template_from
from fedsys.codec.coded import CodedTensor
from fedsys.codec.limits import PayloadLimits
from fedsys.codec.wire import HEADER, pack_update
from fedsys.config import DefenseConfig
from fedsys.crypto import (
    AggregatorKeys,
    ClientKeys,
    RoundBinding,
    generate_exchange_key,
    generate_signing_key,
    seal,
)
from fedsys.errors import UpdateRejected, WireFormatError
from fedsys.server.collect import RoundCollector, RoundResult
from fedsys.server.direction import direction_threshold
from fedsys.server.norm_bound import NormBound
from fedsys.server.records import RoundRecord, append_round, read_rounds, truncate_rounds

pytestmark = pytest.mark.usefixtures("task_identity")

GLOBAL = {
    "conv.weight": np.linspace(-1, 1, 512, dtype=np.float32).reshape(16, 32),
    "conv.bias": np.zeros(32, np.float32),
    "bn.num_batches_tracked": np.array(3, dtype=np.int64),
}
RUN, ROUND = 5, 2
SERVER = generate_exchange_key()
ALICE = generate_signing_key()
KEYS = AggregatorKeys(SERVER, {"alice": ALICE.public_key()})
NO_BOUND = DefenseConfig(norm_bound="none", direction_check=False)
BOUND = DefenseConfig(direction_check=False)  # the norm bound alone: these deltas are random


def _delta(seed: int, scale: float = 0.01) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(16, 32, generator=gen) * scale,
        "conv.bias": torch.randn(32, generator=gen) * scale,
        "bn.num_batches_tracked": torch.tensor(2, dtype=torch.int64),
    }


def _reply(node: int, record: dict[str, object], metrics: dict[str, object]) -> Message:
    instruction = Message(content=RecordDict(), dst_node_id=node, message_type="train")
    content = RecordDict(
        {"update": ConfigRecord(record), "metrics": MetricRecord(metrics)}  # type: ignore[arg-type]
    )
    return Message(content=content, reply_to=instruction)


def _plain(node: int, payload: bytes, examples: object = 10) -> Message:
    return _reply(node, {"payload": payload}, {"num-examples": examples, "train_loss": 0.5})


def _sealed(node: int, payload: bytes, examples: object = 10) -> Message:
    keys = ClientKeys("alice", ALICE, SERVER.public_key())
    env = seal(payload, keys, RoundBinding(RUN, ROUND, node), frame_size=256)
    return _reply(node, dict(env.to_record_values()), {"num-examples": examples})


def _collector(
    *,
    streaming: bool = True,
    sealed: bool = False,
    defense: DefenseConfig = NO_BOUND,
    declared: dict[int, int] | None = None,
    global_arrays: dict[str, np.ndarray] | None = None,
    bound: NormBound | None = None,
    expected_replies: int = 7,
) -> RoundCollector:
    return RoundCollector(
        global_arrays or GLOBAL,
        UpdatePolicy(require_envelope=sealed),
        binding=lambda node: RoundBinding(RUN, ROUND, node),
        keys=KEYS if sealed else None,
        client_ids={},
        keep_stragglers=True,
        streaming=streaming,
        defense=defense,
        norm_bound=bound,
        declared_examples=declared,
        expected_replies=expected_replies,
    )


def _honest(seed: int, examples: int = 10, pipeline: list[object] | None = None) -> bytes:
    stages = pipeline if pipeline is not None else [Quantize(bits=8)]
    return encode_update(_delta(seed), stages, num_examples=examples).payload  # type: ignore[arg-type]


def _finish(collector: RoundCollector) -> RoundResult:
    return collector.finish(lambda n: (0, n), build_record=False)


def _assert_sound(result: RoundResult, offered: int) -> None:
    """Every reply accounted for; an aggregate, when there is one, is finite."""
    assert result.accepted + len(result.rejected) == offered
    assert all(r.reason for r in result.rejected)
    assert result.internal_errors == 0, [r.reason for r in result.rejected]  # all typed
    if result.mean_weights is not None:
        for name, value in result.mean_weights.items():
            assert np.isfinite(value).all(), name


def _int8_tensor(scale: float, code: int, n: int, block: int = 256) -> CodedTensor:
    blocks = -(-n // block)
    return CodedTensor(
        shape=(n,),
        dtype="float32",
        encoding="int8",
        values=torch.full((n,), code, dtype=torch.int8),
        count=n,
        scales=torch.full((blocks,), scale, dtype=torch.float32),
        block_size=block,
    )


# -- finding 1: values that overflow once decoded --------------------------------------------


def test_a_finite_int8_scale_that_overflows_when_decoded_is_rejected() -> None:
    """3e38 x 127 is finite as two factors, infinite as a float32 value."""
    model = {"w": np.zeros(512, np.float32)}
    payload = pack_update([Quantize(bits=8)], {"w": _int8_tensor(3e38, 127, 512)}, num_examples=5)
    with pytest.raises(UpdateRejected, match="beyond what its dtype"):
        check_payload(payload, template_from(model), UpdatePolicy(require_envelope=False))
    collector = _collector(global_arrays=model)
    collector.offer(_plain(1, payload, 5))
    collector.offer(
        _plain(2, pack_update([Quantize(8)], {"w": _int8_tensor(1e-3, 3, 512)}, num_examples=5), 5)
    )
    result = _finish(collector)
    assert result.accepted == 1 and "dtype" in result.rejected[0].reason
    assert result.mean_weights is not None and np.isfinite(result.mean_weights["w"]).all()


def test_a_float32_delta_too_large_for_a_float16_model_is_rejected() -> None:
    model = {"w": np.zeros(64, np.float16)}
    # 1e5 is finite in float32 but beyond float16's 65504: the model would become inf
    payload = pack_update(
        [],
        {"w": CodedTensor((64,), "float16", "f32", torch.full((64,), 1e5), 64)},
        num_examples=1,
    )
    with pytest.raises(UpdateRejected, match="float16"):
        check_payload(payload, template_from(model), UpdatePolicy(require_envelope=False))


@pytest.mark.parametrize("behaviour", ["nan", "inf", "overflow"])
@pytest.mark.parametrize("streaming", [True, False])
def test_forged_non_finite_or_overflowing_values_never_reach_the_model(
    behaviour: str, streaming: bool
) -> None:
    payload = forged_payload(_delta(1), behaviour, 10)
    collector = _collector(streaming=streaming)
    collector.offer(_plain(1, payload))
    collector.offer(_plain(2, _honest(2)))
    result = _finish(collector)
    _assert_sound(result, 2)
    assert result.accepted == 1 and result.rejected[0].node_id == 1


# -- finding 2: the aggregation weight -------------------------------------------------------


@pytest.mark.parametrize(
    ("claimed", "stated", "reason"),
    [
        (math.nan, 10, "differs"),
        (math.inf, 10, "differs"),
        (-5, 10, "differs"),
        (math.nan, None, "inside the (signed) update payload"),
        (10, None, "inside the (signed) update payload"),
        (10**12, 10**12, "exceeds"),
        (500, 500, "exceeds the node's limit of 400"),
        ([10, 10], 10, "must be a number"),  # a MetricRecord may hold lists
    ],
)
def test_weights_must_be_signed_finite_positive_and_bounded(
    claimed: object, stated: int | None, reason: str
) -> None:
    payload = encode_update(_delta(1), [Quantize(bits=8)], num_examples=stated).payload
    collector = _collector(declared={1: 400, 2: 400})
    collector.offer(_plain(1, payload, claimed))
    collector.offer(_plain(2, _honest(2)))
    result = _finish(collector)
    assert result.accepted == 1
    assert [r.node_id for r in result.rejected] == [1]
    assert reason in result.rejected[0].reason


def test_the_signed_weight_is_the_one_aggregated() -> None:
    """A relay that rewrites the MetricRecord cannot reweigh an encrypted update."""
    heavy = _sealed(1, _honest(1, examples=30), examples=30)
    light = _sealed(2, _honest(2, examples=10), examples=10)
    collector = _collector(sealed=True)
    collector.offer(heavy)
    collector.offer(light)
    result = collector.finish(lambda n: (0, n))
    assert result.accepted == 2
    assert result.for_strategy[0].content.metric_records["metrics"]["num-examples"] == 40


@pytest.mark.parametrize("name", ["fedadam", "fedavg", "fedmedian", "krum"])
def test_no_weight_crashes_a_strategy(name: str) -> None:
    """FedAdam used to crash on round(NaN) in the collector's final record."""
    from flwr.app import Array, ArrayRecord

    from fedsys.config import build_config
    from fedsys.server.strategies import build_strategy
    from fedsys.strategy_traits import STRATEGY_TRAITS

    cfg = build_config({"strategy": {"name": name}, "data": {"num_partitions": 4}})
    strategy = build_strategy(cfg.strategy, cfg.train, 4)
    arrays = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    with contextlib.suppress(_Sampled):
        strategy.configure_train(1, arrays, ConfigRecord(), _NoNodes())  # type: ignore[arg-type]
    collector = _collector(streaming=STRATEGY_TRAITS[name].streaming)
    collector.offer(_plain(1, _honest(1), math.nan))
    collector.offer(_plain(2, _honest(2), math.inf))
    for node in (3, 4, 5):
        collector.offer(_plain(node, _honest(node)))
    result = collector.finish(lambda n: (0, n))
    assert result.accepted == 3 and {r.node_id for r in result.rejected} == {1, 2}
    agg, _ = strategy.aggregate_train(1, result.for_strategy)
    assert agg is not None
    assert all(np.isfinite(v.numpy()).all() for v in agg.values())


class _Sampled(Exception):
    pass


class _NoNodes:
    """Stops configure_train at node sampling, once the strategy has recorded the arrays."""

    def get_node_ids(self) -> list[int]:
        raise _Sampled


# -- finding 3: claimed sizes ----------------------------------------------------------------


def test_a_decompression_bomb_is_refused_before_it_expands() -> None:
    assert len(decompression_bomb()) < 1 << 20  # 64 MiB of manifest in well under a megabyte
    bomb = decompression_bomb(4 << 20)  # small enough to pass this small model's size limit
    assert len(bomb) < PayloadLimits.for_model(template_from(GLOBAL)).payload_bytes
    collector = _collector(sealed=True)
    reply = _sealed(1, bomb)
    tracemalloc.start()
    try:
        collector.offer(reply)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    result = _finish(collector)
    assert result.accepted == 0 and "manifest" in result.rejected[0].reason
    model_bytes = sum(v.nbytes for v in GLOBAL.values())
    assert peak < 2 * model_bytes + 4 * len(bomb) + (1 << 20)


def test_claimed_sizes_are_bounded_by_the_model() -> None:
    """An envelope claiming a payload larger than any update of this model is refused
    before its buffer is allocated; so is a manifest naming more tensors than it has."""
    big = bytes(200_000)  # larger than 2x this model's fp32 size
    collector = _collector(sealed=True)
    reply = _sealed(1, big)
    tracemalloc.start()
    try:
        collector.offer(reply)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    result = _finish(collector)
    assert "exceeds the limit" in result.rejected[0].reason
    assert peak < len(big)  # the plaintext buffer was never allocated
    template, policy = template_from(GLOBAL), UpdatePolicy(require_envelope=False)
    four = {f"t{i}": torch.zeros(1) for i in range(4)}
    with pytest.raises(UpdateRejected, match="4 tensors, the model has 3"):
        check_payload(encode_update(four, [], num_examples=1).payload, template, policy)
    many = {f"t{i}": torch.zeros(1) for i in range(200)}  # its manifest alone is too large
    with pytest.raises(WireFormatError, match="manifest"):
        check_payload(encode_update(many, [], num_examples=1).payload, template, policy)


# -- finding 4: metrics that are not finite --------------------------------------------------


def test_non_finite_metrics_round_trip_through_metrics_jsonl(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "metrics.jsonl"
    for rnd, loss in ((1, 0.5), (2, math.nan), (3, math.inf)):
        append_round(
            path,
            RoundRecord(
                round=rnd,
                central_accuracy=0.5,
                central_loss=loss,
                train_loss=-math.inf if rnd == 3 else None,
                clients=1,
                sampled=1,
                rejected=[],
                stragglers_dropped=0,
                bytes_up=0,
                bytes_down=0,
                seconds=0.1,
                client_train_seconds=None,
            ),
        )
    rows = read_rounds(path)
    assert math.isnan(rows[1].central_loss) and rows[2].central_loss == math.inf
    assert rows[2].train_loss == -math.inf
    for line in path.read_text().splitlines():
        json.loads(line)  # strict JSON: no bare NaN / Infinity literals
    assert [r.round for r in truncate_rounds(path, 2)] == [1, 2]


def test_a_non_finite_client_metric_is_a_rejection() -> None:
    collector = _collector()
    collector.offer(
        _reply(1, {"payload": _honest(1)}, {"num-examples": 10, "train_loss": math.nan})
    )
    collector.offer(_plain(2, _honest(2)))
    result = _finish(collector)
    assert result.accepted == 1 and "train_loss" in result.rejected[0].reason
    assert math.isfinite(result.metrics["train_loss"])


# -- the adaptive norm bound -----------------------------------------------------------------


@pytest.mark.parametrize("streaming", [True, False])
def test_the_first_round_judges_updates_against_their_own_median(streaming: bool) -> None:
    bound = NormBound(BOUND)
    collector = _collector(streaming=streaming, defense=BOUND, bound=bound)
    scaled = encode_update(_delta(9, scale=1.0), [Quantize(bits=8)], num_examples=10).payload
    for node in range(1, 6):
        collector.offer(_plain(node, _honest(node)))
    collector.offer(_plain(6, scaled))
    result = collector.finish(lambda n: (0, n))
    assert result.accepted == 5 and [r.node_id for r in result.rejected] == [6]
    assert "median" in result.rejected[0].reason
    bound.end_round(result.accepted_norms)
    assert bound.reference is not None and bound.reference < 1.0
    # the next round adds updates within the previous bound on arrival, holds the others
    second = _collector(streaming=streaming, defense=BOUND, bound=bound)
    second.offer(_plain(6, scaled))
    for node in range(1, 5):
        second.offer(_plain(node, _honest(10 + node)))
    later = second.finish(lambda n: (0, n))
    assert later.accepted == 4 and [r.node_id for r in later.rejected] == [6]


def test_honest_norms_that_grow_between_rounds_are_not_locked_out() -> None:
    """A FedOpt step can make every honest update several times larger than last round's."""
    bound = NormBound(BOUND, reference=0.01)
    collector = _collector(defense=BOUND, bound=bound)
    for node in range(1, 5):
        grown = encode_update(_delta(node, scale=0.5), [], num_examples=10).payload
        collector.offer(_plain(node, grown))
    result = _finish(collector)
    assert result.accepted == 4 and not result.rejected
    bound.end_round(result.accepted_norms)
    assert bound.reference is not None and bound.reference > 1.0


def test_clipping_scales_an_outlier_to_the_bound() -> None:
    defense = DefenseConfig(norm_action="clip", direction_check=False)
    bound = NormBound(defense, reference=0.1)
    honest = [encode_update(_delta(n), [], num_examples=10).payload for n in range(1, 5)]
    big = encode_update(_delta(9, scale=1.0), [], num_examples=10).payload
    collector = _collector(defense=defense, bound=bound)
    for node, payload in enumerate([*honest, big], start=1):
        collector.offer(_plain(node, payload))
    result = _finish(collector)
    assert result.accepted == 5 and result.clipped == 1 and not result.rejected
    norms = sorted(result.accepted_norms)
    limit = 3 * max(0.1, float(np.median([*norms[:4], 23.0])))
    assert norms[-1] == pytest.approx(limit)  # the outlier, scaled down to the bound
    assert result.mean_weights is not None
    moved = result.mean_weights["conv.weight"] - GLOBAL["conv.weight"]
    assert float(np.abs(moved).max()) < 0.3  # unclipped, the outlier alone would move ~0.6


def test_decisions_do_not_depend_on_arrival_order() -> None:
    payloads = [_honest(n) for n in range(1, 6)]
    payloads.append(encode_update(_delta(9, scale=0.05), [], num_examples=10).payload)
    outcomes = []
    for order in ([0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [2, 5, 0, 4, 1, 3]):
        collector = _collector(defense=BOUND, bound=NormBound(BOUND))
        for i in order:
            collector.offer(_plain(i + 1, payloads[i]))
        result = _finish(collector)
        assert result.mean_weights is not None
        outcomes.append(
            (sorted(r.node_id for r in result.rejected), result.mean_weights["conv.weight"])
        )
    for rejected, weights in outcomes[1:]:
        assert rejected == outcomes[0][0]
        np.testing.assert_array_equal(weights, outcomes[0][1])


# -- the direction check ---------------------------------------------------------------------


def _correlated(seed: int, sign: float = 1.0) -> bytes:
    """Honest clients agree on a common direction (plus their own noise)."""
    common = _delta(0)
    own = _delta(seed)
    delta = {
        k: (sign * (common[k] + 0.5 * own[k]) if v.is_floating_point() else v)
        for k, v in own.items()
    }
    return encode_update(delta, [Quantize(bits=8)], num_examples=10).payload


@pytest.mark.parametrize("order", [[1, 2, 3, 4, 5, 6, 7], [7, 6, 5, 4, 3, 2, 1]])
def test_sign_flipped_updates_are_rejected_whatever_the_order(order: list[int]) -> None:
    defense = DefenseConfig()
    collector = _collector(defense=defense, bound=NormBound(defense))
    flipped = {6, 7}
    replies = {n: _plain(n, _correlated(n, -1.0 if n in flipped else 1.0)) for n in order}
    for node in order:
        collector.offer(replies[node])
    result = _finish(collector)
    assert sorted(r.node_id for r in result.rejected) == [6, 7]
    assert all("defense.direction_check" in r.reason for r in result.rejected)
    assert result.accepted == 5 and len(result.accepted_norms) == 5
    honest = _collector()
    for node in range(1, 6):
        honest.offer(_plain(node, _correlated(node)))
    expected = _finish(honest).mean_weights
    assert result.mean_weights is not None and expected is not None
    for name, value in expected.items():  # exactly as if the flipped updates never came
        np.testing.assert_array_equal(result.mean_weights[name], value)


def _uncorrelated(seed: int) -> bytes:
    """Late in training: honest updates share no direction, their cosines scatter around 0."""
    return encode_update(_delta(seed), [Quantize(bits=8)], num_examples=10).payload


def test_with_the_spread_line_nearly_orthogonal_honest_updates_are_kept() -> None:
    spread = DefenseConfig(min_cosine_spread=3.0)
    collector = _collector(defense=spread, bound=NormBound(spread))
    for node in range(1, 8):
        collector.offer(_plain(node, _uncorrelated(node)))
    result = _finish(collector)
    assert result.accepted == 7 and not result.rejected
    # the fixed threshold alone (the default) refuses the ones that point slightly away
    fixed = DefenseConfig()
    strict = _collector(defense=fixed, bound=NormBound(fixed))
    for node in range(1, 8):
        strict.offer(_plain(node, _uncorrelated(node)))
    assert _finish(strict).rejected


def test_the_direction_threshold_is_the_lower_of_the_fixed_and_the_rounds_own_line() -> None:
    assert direction_threshold([0.6, 0.62, 0.58, -0.6], 0.0, 3.0) == 0.0  # the fixed line
    low = direction_threshold([0.01, -0.03, 0.02, -0.01, 0.03], 0.0, 3.0)
    assert -0.2 < low < -0.03  # the round's own line
    assert direction_threshold([0.01, -0.03, 0.02], 0.0, 0.0) == 0.0
    assert direction_threshold([0.5, -0.5], 0.0, 3.0) == 0.0  # too few to judge a spread


def test_the_direction_check_holds_no_more_than_its_budget() -> None:
    defense = DefenseConfig(hold_budget_mb=0)
    collector = _collector(defense=defense, bound=NormBound(defense))
    for node in range(1, 6):
        collector.offer(_plain(node, _correlated(node, -1.0 if node == 5 else 1.0)))
    assert _finish(collector).accepted == 5  # over budget: no check, nothing held


# -- mutations of real payloads through the real path ----------------------------------------

PIPELINES: list[list[object]] = [
    [],
    [Quantize(bits=8)],
    [Quantize(bits=4)],
    [TopK(0.2), Quantize(bits=8)],
    [TopK(0.3)],
    [Quantize(bits=16)],
]


def _manifest_of(payload: bytes) -> dict[str, object]:
    _, _, _, length, _ = HEADER.unpack_from(payload)
    raw = payload[HEADER.size : HEADER.size + length]
    return json.loads(zlib.decompress(raw))  # type: ignore[no-any-return]


def _with_manifest(payload: bytes, manifest: dict[str, object]) -> bytes:
    magic, version, flags, length, _ = HEADER.unpack_from(payload)
    body = zlib.compress(json.dumps(manifest).encode())
    header = HEADER.pack(magic, version, flags, len(body), zlib.crc32(body))
    return header + body + payload[HEADER.size + length :]


MANIFEST_FIELDS = [
    "count",
    "block_size",
    "scales_bytes",
    "values_bytes",
    "shape",
    "dtype",
    "encoding",
    "crc32",
    "positions",
    "name",
]
FIELD_VALUES = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64),
    st.sampled_from([0, 1, 2, 7, 8, 255, 256, 1 << 31, 1 << 40]),
    st.sampled_from(["float16", "int64", "bool", "int4", "int8", "f32", "raw", "w", ""]),
    st.lists(st.integers(min_value=0, max_value=1 << 33), max_size=4),
    st.none(),
    st.floats(allow_nan=True),
    st.dictionaries(
        st.sampled_from(["k", "unary_bytes", "remainder_bytes"]),
        st.integers(min_value=-1, max_value=1 << 40),
    ),
)
TOP_FIELDS = st.sampled_from(["num_examples", "stages", "tensors"])


def _offer_and_check(make: Callable[[int], Message], sealed: bool) -> None:
    collector = _collector(sealed=sealed)
    collector.offer(make(1))
    collector.offer((_sealed if sealed else _plain)(2, _honest(2)))
    result = _finish(collector)
    _assert_sound(result, 2)
    assert 2 not in {r.node_id for r in result.rejected}  # the honest update still counts


FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))


@FAST
@given(
    pipeline=st.sampled_from(range(len(PIPELINES))),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=8,
    ),
    cut=st.integers(min_value=-64, max_value=64),
    sealed=st.booleans(),
)
def test_byte_mutations_end_in_acceptance_or_a_rejection(
    pipeline: int, edits: list[tuple[int, int]], cut: int, sealed: bool
) -> None:
    payload = bytearray(_honest(1, pipeline=PIPELINES[pipeline]))
    for position, value in edits:
        payload[position % len(payload)] = value
    mutated = bytes(payload[:cut] if cut < 0 else payload + bytes(cut))
    _offer_and_check(lambda n: (_sealed if sealed else _plain)(n, mutated), sealed)


@FAST
@given(
    pipeline=st.sampled_from(range(len(PIPELINES))),
    tensor=st.integers(min_value=0, max_value=2),
    field=st.sampled_from(MANIFEST_FIELDS),
    value=FIELD_VALUES,
    top=st.one_of(st.none(), st.tuples(TOP_FIELDS, FIELD_VALUES)),
    sealed=st.booleans(),
)
def test_manifest_mutations_end_in_acceptance_or_a_rejection(
    pipeline: int,
    tensor: int,
    field: str,
    value: object,
    top: tuple[str, object] | None,
    sealed: bool,
) -> None:
    """Checksums recomputed: the attacker owns the client, so only the checks can stop it."""
    payload = _honest(1, pipeline=PIPELINES[pipeline])
    manifest = _manifest_of(payload)
    entries = manifest["tensors"]
    assert isinstance(entries, list)
    entries[tensor % len(entries)][field] = value
    if top is not None:
        manifest[top[0]] = top[1]
    try:
        mutated = _with_manifest(payload, manifest)
    except ValueError:  # json cannot write it (e.g. NaN is fine, but a cycle is not)
        return
    _offer_and_check(lambda n: (_sealed if sealed else _plain)(n, mutated), sealed)


@FAST
@given(
    header=st.dictionaries(
        st.sampled_from(["payload_length", "frame_size", "frame_count", "round", "node_id"]),
        st.integers(min_value=-1, max_value=1 << 64),
        min_size=1,
    ),
    drop_frames=st.integers(min_value=0, max_value=3),
)
def test_envelope_claims_end_in_a_rejection(header: dict[str, int], drop_frames: int) -> None:
    keys = ClientKeys("alice", ALICE, SERVER.public_key())
    env = seal(_honest(1), keys, RoundBinding(RUN, ROUND, 1), frame_size=256)
    fields = json.loads(env.header.model_dump_json())
    fields.update(header)
    values = dict(env.to_record_values())
    values["header"] = json.dumps(fields).encode()
    frames = values["frames"]
    assert isinstance(frames, list)
    values["frames"] = frames[: max(0, len(frames) - drop_frames)] if drop_frames else frames
    _offer_and_check(
        lambda n: _reply(n, values, {"num-examples": 10}),
        sealed=True,  # type: ignore[arg-type]
    )


def test_a_plain_flower_client_is_told_what_the_run_requires() -> None:
    from flwr.app import Array, ArrayRecord

    instruction = Message(content=RecordDict(), dst_node_id=3, message_type="train")
    plain = Message(
        RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in GLOBAL.items()}),
                "metrics": MetricRecord({"num-examples": 10}),
            }
        ),
        reply_to=instruction,
    )
    collector = _collector(sealed=True)
    collector.offer(plain)
    reason = _finish(collector).rejected[0].reason
    assert "it sent arrays 'arrays', metrics 'metrics'" in reason
    assert "codec.encrypt=true" in reason and "fedsys.app:client_app" in reason


def test_a_replayed_payload_is_refused_even_sealed_anew(tmp_path: object) -> None:
    from pathlib import Path

    from fedsys.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from fedsys.server.replay import digests_array, digests_set

    seen: set[bytes] = set()
    payload = _honest(1)

    def collector(rnd: int) -> RoundCollector:  # one per round, sharing the run's digests
        return RoundCollector(
            GLOBAL,
            UpdatePolicy(),
            binding=lambda node: RoundBinding(RUN, rnd, node),
            keys=KEYS,
            client_ids={},
            keep_stragglers=True,
            streaming=True,
            seen_payloads=seen,
        )

    first = collector(ROUND)
    first.offer(_sealed(1, payload))
    assert first.finish(lambda n: (0, n)).accepted == 1
    # next round: the same plaintext, sealed for the new round (a valid envelope)
    keys = ClientKeys("alice", ALICE, SERVER.public_key())
    env = seal(payload, keys, RoundBinding(RUN, ROUND + 1, 1), frame_size=256)
    second = collector(ROUND + 1)
    second.offer(_reply(1, dict(env.to_record_values()), {"num-examples": 10}))
    result = second.finish(lambda n: (0, n))
    assert result.accepted == 0 and "replay" in result.rejected[0].reason
    # the digests survive a checkpoint
    directory = Path(str(tmp_path))
    save_checkpoint(
        directory,
        Checkpoint(round=1, model=GLOBAL, defense_arrays={"d": digests_array(seen)}),
    )
    assert digests_set(load_checkpoint(directory).defense_arrays["d"]) == seen
    empty = Checkpoint(round=1, model=GLOBAL, defense_arrays={"d": digests_array(set())})
    save_checkpoint(directory, empty)
    assert digests_set(load_checkpoint(directory).defense_arrays["d"]) == set()
