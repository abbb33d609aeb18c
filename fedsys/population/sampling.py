"""Sampling clients by their stable keys (never by Flower's random node ids).

The candidates are sorted first, so the same generator state picks the same clients whatever
order the nodes registered in.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedsys.errors import FedsysError


class SamplingError(FedsysError):
    """Too few candidates for the sample asked for."""


def sample_keys(
    rng: np.random.Generator, candidates: npt.ArrayLike, k: int
) -> npt.NDArray[np.int64]:
    """``k`` distinct keys from ``candidates`` without replacement, sorted."""
    pool = np.unique(np.asarray(candidates, dtype=np.int64))
    if k > len(pool):
        raise SamplingError(f"cannot sample {k} clients from {len(pool)} candidates")
    if k == len(pool):
        return pool
    return np.sort(rng.choice(pool, size=k, replace=False))
