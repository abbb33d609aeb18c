"""Rice coding of sorted positions (the gaps between kept indices), vectorised in numpy.

Written here because no maintained Python library codes integer sequences this way without a
per-element Python loop. Each gap ``g = pos[i] - pos[i-1] - 1`` is split into ``q = g >> k``
and the low ``k`` bits. The quotients go to a *unary stream* (``q`` zero bits then a one) and
the remainders to a separate fixed-width stream: with the streams apart, decoding needs no
sequential scan (the ones of the unary stream mark where each quotient ends). For uniformly
spread positions at 10% density this costs about 4.8 bits per position, close to the
4.69-bit entropy bound for choosing 10% of the positions at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedsys.errors import CodecArgumentError, WireFormatError

MAX_K = 32


@dataclass(frozen=True)
class RiceCode:
    k: int
    unary: bytes
    remainders: bytes


def _gaps(positions: NDArray[np.int64]) -> NDArray[np.int64]:
    return np.diff(positions, prepend=np.int64(-1)) - 1


def best_k(gaps: NDArray[np.int64]) -> int:
    """The Rice parameter with the fewest total bits, searched around log2(mean gap)."""
    if gaps.size == 0:
        return 0
    mean = float(gaps.mean())
    guess = int(np.floor(np.log2(mean + 1.0)))
    candidates = range(max(0, guess - 1), min(MAX_K, guess + 2) + 1)
    cost = {k: int((gaps >> k).sum()) + gaps.size * (k + 1) for k in candidates}
    return min(cost, key=lambda k: cost[k])


def encode_positions(positions: NDArray[np.int64]) -> RiceCode:
    """Strictly increasing non-negative indices → Rice code."""
    gaps = _gaps(positions.astype(np.int64, copy=False))
    if gaps.size and int(gaps.min()) < 0:
        raise CodecArgumentError("positions must be strictly increasing and non-negative")
    k = best_k(gaps)
    quotients = gaps >> k
    ones = np.cumsum(quotients + 1) - 1
    unary_bits = np.zeros(int(ones[-1]) + 1 if ones.size else 0, dtype=np.uint8)
    unary_bits[ones] = 1
    rem_bits = np.empty((gaps.size, k), dtype=np.uint8)
    for j in range(k):
        rem_bits[:, j] = (gaps >> (k - 1 - j)) & 1
    return RiceCode(k, np.packbits(unary_bits).tobytes(), np.packbits(rem_bits).tobytes())


def decode_positions(
    unary: NDArray[np.uint8], remainders: NDArray[np.uint8], count: int, k: int, numel: int
) -> NDArray[np.int64]:
    """Rice code → ``count`` sorted indices, each below ``numel``; WireFormatError otherwise."""
    if not 0 <= k <= MAX_K:
        raise WireFormatError(f"Rice parameter {k} is out of range")
    if remainders.size != -(-count * k // 8):
        raise WireFormatError("Rice remainder stream has the wrong length")
    ones = np.flatnonzero(np.unpackbits(unary))
    if ones.size != count:
        raise WireFormatError(f"Rice unary stream holds {ones.size} codes, expected {count}")
    if count == 0:
        if unary.size:
            raise WireFormatError("Rice unary stream has trailing bytes")
        return np.zeros(0, dtype=np.int64)
    if unary.size != int(ones[-1]) // 8 + 1:
        raise WireFormatError("Rice unary stream has trailing bytes")
    quotients = np.diff(ones, prepend=np.int64(-1)) - 1
    if int(quotients.max()) > (numel >> k):
        raise WireFormatError("Rice-coded position lies outside the tensor")
    gaps = quotients.astype(np.int64) << k
    if k:
        bits = np.unpackbits(remainders)
        if bits[count * k :].any():
            raise WireFormatError("Rice remainder stream has non-zero padding")
        planes = bits[: count * k].reshape(count, k)
        for j in range(k):
            gaps |= planes[:, j].astype(np.int64) << (k - 1 - j)
    positions = np.cumsum(gaps + 1) - 1
    if int(positions[-1]) >= numel:
        raise WireFormatError("Rice-coded position lies outside the tensor")
    return positions
