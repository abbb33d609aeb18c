"""Rice-coded positions: exact round trip, size at 10% density, refusal of corrupt streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsys.codec.rice import decode_positions, encode_positions
from fedsys.errors import WireFormatError


def _decode(code_positions: np.ndarray, numel: int) -> np.ndarray:
    code = encode_positions(code_positions)
    return decode_positions(
        np.frombuffer(code.unary, np.uint8),
        np.frombuffer(code.remainders, np.uint8),
        code_positions.size,
        code.k,
        numel,
    )


@settings(max_examples=150, deadline=None)
@given(st.sets(st.integers(0, 5000), max_size=400))
def test_round_trip(positions: set[int]) -> None:
    pos = np.array(sorted(positions), dtype=np.int64)
    assert np.array_equal(_decode(pos, 5001), pos)


def test_cost_under_five_bits_per_index_at_ten_percent_density() -> None:
    rng = np.random.default_rng(0)
    n = 1_000_000
    pos = np.sort(rng.choice(n, size=n // 10, replace=False)).astype(np.int64)
    code = encode_positions(pos)
    bits = 8 * (len(code.unary) + len(code.remainders)) / pos.size
    assert bits < 5.0
    assert np.array_equal(_decode(pos, n), pos)


def test_clustered_positions_stay_small() -> None:
    pos = np.concatenate([np.arange(1000), np.arange(10_000_000 - 1000, 10_000_000)])
    code = encode_positions(pos.astype(np.int64))
    assert len(code.unary) + len(code.remainders) < 2 * pos.size  # < 2 bytes per index


@pytest.mark.parametrize(
    ("mutate", "count"),
    [
        (lambda u, r: (u[:-1], r), None),  # unary stream cut short
        (lambda u, r: (np.append(u, np.uint8(0)), r), None),  # trailing byte
        (lambda u, r: (u, r[:-1]), None),  # remainders cut short
        (lambda u, r: (u, r), 99),  # wrong count
    ],
)
def test_corrupt_streams_raise_wire_format_error(mutate: object, count: int | None) -> None:
    pos = np.arange(0, 1000, 7, dtype=np.int64)
    code = encode_positions(pos)
    unary, rem = mutate(
        np.frombuffer(code.unary, np.uint8), np.frombuffer(code.remainders, np.uint8)
    )  # type: ignore[operator]
    with pytest.raises(WireFormatError):
        decode_positions(unary, rem, count or pos.size, code.k, 1000)


def test_positions_beyond_the_tensor_are_refused() -> None:
    pos = np.array([5, 900], dtype=np.int64)
    code = encode_positions(pos)
    with pytest.raises(WireFormatError):
        decode_positions(
            np.frombuffer(code.unary, np.uint8),
            np.frombuffer(code.remainders, np.uint8),
            2,
            code.k,
            900,
        )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64), st.binary(max_size=64), st.integers(0, 200), st.integers(0, 40))
def test_random_streams_raise_only_wire_format_error(
    unary: bytes, rem: bytes, count: int, k: int
) -> None:
    try:
        out = decode_positions(
            np.frombuffer(unary, np.uint8), np.frombuffer(rem, np.uint8), count, k, 4096
        )
    except WireFormatError:
        return
    assert out.size == count and (np.diff(out) > 0).all() and (out < 4096).all()
