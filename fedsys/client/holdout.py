"""A client's own held-out data for federated evaluation.

Where the dataset gives each client a test share (Synthetic by device) that share is used.
Otherwise, with federated evaluation on, each client sets aside ``holdout_fraction`` of its
partition by a permutation seeded with (seed, client key) and never trains on it: the same
samples are held out in every round and every process, and the evaluation of one client
reads nothing but its own partition.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_SALT = 0x4E1D


def holdout_mask(n: int, fraction: float, seed: int, client: int) -> npt.NDArray[np.bool_]:
    """True for the ``round(fraction * n)`` held-out samples (at least 1 and at most n - 1
    when n >= 2; none when n < 2, so a one-sample client still trains)."""
    mask = np.zeros(n, dtype=bool)
    if n < 2:
        return mask
    k = min(n - 1, max(1, round(fraction * n)))
    order = np.random.default_rng([seed, client, _SALT]).permutation(n)
    mask[order[:k]] = True
    return mask
