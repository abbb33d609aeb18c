"""Secure aggregation without Flower: the unmasked sum is the exact integer sum, with dropouts."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsys.errors import ConfigError, SecAggAborted, SecAggError
from fedsys.secagg import shamir
from fedsys.secagg.client import Reveal
from fedsys.secagg.fixedpoint import FixedPoint, wrap_error
from fedsys.secagg.graph import effective_degree, neighbours
from fedsys.secagg.local import run_local_round
from fedsys.secagg.messages import RoundParams
from fedsys.secagg.prg import apply_masks, mask_of

NODE_IDS = [int(v) for v in np.random.default_rng(5).integers(1, 2**63, 20, dtype=np.int64)]


def _params(
    nodes: list[int], *, degree: int | None = None, threshold: float = 0.5, length: int = 1000
) -> RoundParams:
    return RoundParams(
        run_id=7,
        round=3,
        seed=b"s" * 16,
        nodes=tuple(sorted(nodes)),
        degree=degree,
        threshold=threshold,
        bits=32,
        quant_bits=16,
        clip_range=1.0,
        length=length,
    )


def _inputs(params: RoundParams, seed: int = 0) -> dict[int, np.ndarray]:
    """Quantized deltas, as the clients would make them."""
    rng = np.random.default_rng(seed)
    fp = FixedPoint(params.bits, params.quant_bits, params.clip_range)
    return {
        n: fp.encode(rng.normal(0, 0.3, params.length).astype(np.float32)) for n in params.nodes
    }


def _plain_sum(inputs: dict[int, np.ndarray], nodes: set[int]) -> np.ndarray:
    total = np.zeros_like(next(iter(inputs.values())))
    for n in nodes:
        total += inputs[n]  # uint32: wraps mod 2^32 like the protocol
    return total


def test_graph_is_symmetric_regular_and_public() -> None:
    graph = neighbours(b"x" * 16, NODE_IDS, 6)
    assert set(graph) == set(NODE_IDS)
    for node, peers in graph.items():
        assert len(peers) == 6 and node not in peers
        assert all(node in graph[p] for p in peers)
    assert graph == neighbours(b"x" * 16, list(reversed(NODE_IDS)), 6)
    assert graph != neighbours(b"y" * 16, NODE_IDS, 6)
    assert effective_degree(5, None) == 4 and effective_degree(5, 10) == 4
    assert effective_degree(20, 5) == 6


def test_shamir_any_t_shares_recover_the_secret() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, 4, list(range(1, 11)))
    assert shamir.combine({x: shares[x] for x in (2, 5, 7, 10)}) == secret
    assert shamir.combine({x: shares[x] for x in (1, 3, 4, 6, 9)}) == secret
    try:
        fewer = shamir.combine({x: shares[x] for x in (1, 2, 3)})
    except SecAggError:
        fewer = b""
    assert fewer != secret
    with pytest.raises(SecAggError, match="bytes"):
        shamir.combine({1: b"short"})


def test_masks_cancel_and_wrap() -> None:
    key = os.urandom(32)
    vec = np.arange(100_000, dtype=np.uint32)
    apply_masks(vec, [(key, 1), (os.urandom(32), 1)])
    assert not np.array_equal(vec, np.arange(100_000, dtype=np.uint32))
    mask = mask_of(key, 100_000, 32)
    assert np.array_equal(mask, mask_of(key, 100_000, 32))
    zeros = np.zeros(100_000, dtype=np.uint16)
    apply_masks(zeros, [(key, 1), (key, -1)])
    assert not zeros.any()


def test_unmasked_sum_equals_plain_integer_sum() -> None:
    params = _params(NODE_IDS[:10])
    inputs = _inputs(params)
    out = run_local_round(params, inputs)
    assert not out.excluded
    assert out.total.dtype == np.uint32
    assert np.array_equal(out.total, _plain_sum(inputs, set(params.nodes)))
    # and it decodes to the sum of the dequantized deltas
    fp = FixedPoint(32, 16, 1.0)
    expected = sum(fp.decode(inputs[n]).astype(np.float64) for n in params.nodes)
    np.testing.assert_allclose(fp.decode(out.total), expected, rtol=0, atol=1e-4)


def test_thirty_percent_of_twenty_drop_after_masks_are_committed() -> None:
    params = _params(NODE_IDS, degree=8, threshold=0.5)
    inputs = _inputs(params, seed=1)
    dropped = frozenset(params.nodes[i] for i in (0, 3, 7, 11, 15, 19))  # 6 of 20
    out = run_local_round(params, inputs, drop_after_sharing=dropped)
    survivors = set(params.nodes) - dropped
    assert out.server.masked == survivors
    assert np.array_equal(out.total, _plain_sum(inputs, survivors))


def test_clients_vanishing_after_sending_masked_input_are_recovered() -> None:
    params = _params(NODE_IDS, degree=8)
    inputs = _inputs(params, seed=2)
    after_sharing = frozenset(params.nodes[:3])
    after_masking = frozenset(params.nodes[10:13])
    out = run_local_round(
        params, inputs, drop_after_sharing=after_sharing, drop_after_masking=after_masking
    )
    counted = set(params.nodes) - after_sharing
    assert np.array_equal(out.total, _plain_sum(inputs, counted))


def test_wrong_length_masked_vector_is_excluded_with_reason() -> None:
    params = _params(NODE_IDS[:8])
    inputs = _inputs(params, seed=3)
    bad = params.nodes[2]

    def tamper(stage: str, node: int, message: object) -> object:
        if stage == "masked" and node == bad:
            assert isinstance(message, bytes)
            return message[:-4]
        return message

    out = run_local_round(params, inputs, tamper=tamper)
    assert "masked input has 3996 bytes, expected 4000" in out.excluded[bad]
    assert np.array_equal(out.total, _plain_sum(inputs, set(params.nodes) - {bad}))


def test_malformed_and_forged_shares() -> None:
    params = _params(NODE_IDS[:10], threshold=0.5)
    inputs = _inputs(params, seed=4)
    short, liar = params.nodes[1], params.nodes[6]

    def tamper(stage: str, node: int, message: object) -> object:
        if stage == "shares" and node == short:
            assert isinstance(message, dict)
            return {dst: blob[:-1] for dst, blob in message.items()}
        if stage == "reveal" and node == liar:
            assert isinstance(message, Reveal)
            lie = {o: os.urandom(shamir.SHARE_BYTES - 1) + b"\0" for o in message.b_shares}
            return Reveal(lie, message.sk_shares, message.problems)
        return message

    out = run_local_round(params, inputs, tamper=tamper)
    # a malformed share: the sender is excluded before masking, as if it had dropped out
    assert "malformed share for node" in out.excluded[short]
    # forged self-mask shares fail the commitment check; other subsets recover the seed
    assert np.array_equal(out.total, _plain_sum(inputs, set(params.nodes) - {short}))


def test_unopenable_shares_abort_cleanly_naming_the_sender() -> None:
    params = _params(NODE_IDS[:10], threshold=0.5)
    forged = params.nodes[4]

    def tamper(stage: str, node: int, message: object) -> object:
        if stage == "shares" and node == forged:
            assert isinstance(message, dict)
            return {dst: bytes(len(blob)) for dst, blob in message.items()}
        return message

    with pytest.raises(SecAggAborted, match="failed authentication") as info:
        run_local_round(params, _inputs(params, seed=4), tamper=tamper)
    assert info.value.culprit == forged


def test_malformed_reveal_is_excluded_and_too_few_survivors_abort() -> None:
    params = _params(NODE_IDS[:6], threshold=0.5)
    inputs = _inputs(params, seed=5)
    bad = params.nodes[0]

    def tamper(stage: str, node: int, message: object) -> object:
        if stage == "reveal" and node == bad:
            assert isinstance(message, Reveal)
            return Reveal({o: b"x" for o in message.b_shares}, {}, {})
        return message

    out = run_local_round(params, inputs, tamper=tamper)
    assert "malformed share" in out.excluded[bad]
    assert np.array_equal(out.total, _plain_sum(inputs, set(params.nodes)))

    with pytest.raises(SecAggAborted, match="masked inputs arrived"):
        run_local_round(params, inputs, drop_after_sharing=frozenset(params.nodes[:4]))


def test_fixed_point_round_trip_and_wrap_check() -> None:
    fp = FixedPoint(bits=16, quant_bits=8, clip_range=0.5)
    x = np.linspace(-0.7, 0.7, 1001).astype(np.float32)
    codes = fp.encode(x)
    assert codes.dtype == np.uint16
    back = fp.decode(codes)
    clipped = np.clip(x, -0.5, 0.5)
    assert np.max(np.abs(back - clipped)) <= fp.scale / 2 + 1e-7
    noisy = np.full(200_000, 0.3 * fp.scale, dtype=np.float32)
    mean = fp.decode(fp.encode(noisy, rng=np.random.default_rng(0))).mean()
    assert abs(mean - 0.3 * fp.scale) < 0.02 * fp.scale  # stochastic rounding is unbiased
    assert wrap_error(258, 16, 8) is None  # 258 * 127 = 32766 fits
    reason = wrap_error(300, 16, 8)
    assert reason is not None and "300 clients x largest quantized value 127" in reason
    assert "38100 exceeds 32767" in reason and "secagg.bits" in reason
    with pytest.raises(ConfigError, match="quant_bits to 7"):
        fp.check_clients(300)


@settings(max_examples=60, deadline=None)
@given(
    stage=st.sampled_from(["shares", "masked", "reveal"]),
    junk=st.one_of(
        st.binary(max_size=300),
        st.dictionaries(st.integers(0, 2**64 - 1), st.binary(max_size=200), max_size=6),
        st.lists(st.binary(max_size=70), max_size=4),
        st.integers(),
        st.none(),
    ),
)
def test_junk_from_a_client_is_refused_with_a_typed_error(stage: str, junk: object) -> None:
    params = _params(NODE_IDS[:4], length=10)
    bad = params.nodes[0]

    def tamper(stage_now: str, node: int, message: object) -> object:
        if stage_now != stage or node != bad:
            return message
        if stage == "reveal":
            table = junk if isinstance(junk, dict) else {params.nodes[1]: junk}
            return Reveal(table, {}, {})  # type: ignore[arg-type]
        return junk

    out = run_local_round(params, _inputs(params, seed=6), tamper=tamper)
    if bad in out.excluded:  # refused: the sum is the other clients' (or all, if excluded late)
        counted = out.server.masked
        assert np.array_equal(out.total, _plain_sum(_inputs(params, seed=6), counted))
