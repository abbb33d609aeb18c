"""Masks from a ChaCha20 keystream, added into integer vectors modulo 2^b in place.

The keystream is written straight into a small reusable numpy buffer (chunks of 256 KiB that
stay in cache) and added with numpy's wrapping unsigned arithmetic, so applying one mask costs
about one keystream pass plus one vector add, never a Python loop over elements. Every key is
used for one mask only (keys are derived per round and per pair), so the nonce is fixed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

CHUNK_BYTES = 1 << 18
_NONCE = bytes(16)  # 4-byte block counter + 12-byte nonce, all zero: one key, one stream
_ZEROS = bytes(CHUNK_BYTES)

UINT_DTYPES: dict[int, type[np.unsignedinteger]] = {16: np.uint16, 32: np.uint32, 64: np.uint64}


def apply_masks(vector: np.ndarray, masks: Sequence[tuple[bytes, int]]) -> None:
    """``vector += sum(sign * PRG(key))`` modulo 2^bits, in place; ``sign`` is +1 or -1.

    ``vector`` is a contiguous 1-D unsigned integer array; its dtype sets the modulus.
    """
    if not masks:
        return
    if vector.ndim != 1 or not vector.flags.c_contiguous or vector.dtype.kind != "u":
        raise ValueError("masks apply to a contiguous 1-D unsigned integer vector")
    itemsize = vector.dtype.itemsize
    per_chunk = CHUNK_BYTES // itemsize
    scratch = np.empty(per_chunk, dtype=vector.dtype)
    raw = memoryview(scratch).cast("B")  # type: ignore[arg-type]
    streams = [
        (Cipher(algorithms.ChaCha20(key, _NONCE), mode=None).encryptor(), sign)
        for key, sign in masks
    ]
    total = vector.shape[0]
    zeros = memoryview(_ZEROS)
    for start in range(0, total, per_chunk):
        count = min(per_chunk, total - start)
        target = vector[start : start + count]
        block = scratch[:count]
        for stream, sign in streams:
            stream.update_into(zeros[: count * itemsize], raw)
            if sign > 0:
                np.add(target, block, out=target)
            else:
                np.subtract(target, block, out=target)


def mask_of(key: bytes, length: int, bits: int) -> np.ndarray:
    """The mask itself (tests and benchmarks): PRG(key) as ``length`` integers mod 2^bits."""
    out = np.zeros(length, dtype=UINT_DTYPES[bits])
    apply_masks(out, [(key, 1)])
    return out
