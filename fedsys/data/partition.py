"""Splitting one training set into per-client index arrays.

Every partitioner is a pure function of its arguments and an integer seed (drawn through
``np.random.default_rng``), so every simulation worker process computes the same split
independently instead of receiving it. Each returns one sorted int64 index array per
client; a sample belongs to at most one client, and no client is left empty, because a
client without data cannot train and would stall a round.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fedsys.data.types import IndexArray
from fedsys.errors import DataError

DIRICHLET_MAX_TRIES = 100
# The public split is part of the dataset's identity (like its test split), so its draw has
# a fixed seed rather than the experiment's.
PUBLIC_SEED = 20_161_130


def _check_counts(n: int, num_partitions: int, what: str = "samples") -> None:
    if num_partitions < 1:
        raise DataError(f"data.num_partitions must be >= 1, got {num_partitions}")
    if num_partitions > n:
        raise DataError(
            f"cannot split {n} {what} into {num_partitions} non-empty partitions "
            "(lower data.num_partitions)"
        )


def _as_labels(labels: npt.ArrayLike) -> npt.NDArray[np.int64]:
    array = np.asarray(labels)
    if array.ndim != 1:
        raise DataError(f"labels must be one-dimensional, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _sorted(indices: npt.NDArray[np.integer]) -> IndexArray:
    return np.sort(indices).astype(np.int64, copy=False)


def iid(n: int, num_partitions: int, seed: int) -> list[IndexArray]:
    """A uniform random split into sizes that differ by at most one."""
    _check_counts(n, num_partitions)
    order = np.random.default_rng(seed).permutation(n)
    return [_sorted(part) for part in np.array_split(order, num_partitions)]


def dirichlet(
    labels: npt.ArrayLike,
    num_partitions: int,
    alpha: float,
    min_partition_size: int,
    seed: int,
    *,
    max_tries: int = DIRICHLET_MAX_TRIES,
) -> list[IndexArray]:
    """Label skew (Hsu et al. 2019): each class is spread over clients by Dir(alpha).

    Small ``alpha`` gives each client few classes, large ``alpha`` approaches IID. The draw
    is repeated until every partition has ``min_partition_size`` samples (at least 1), and
    gives up with a DataError after ``max_tries`` draws rather than looping forever.
    """
    y = _as_labels(labels)
    n = len(y)
    _check_counts(n, num_partitions)
    if alpha <= 0:
        raise DataError(f"data.dirichlet_alpha must be > 0, got {alpha}")
    need = max(1, min_partition_size)
    if need * num_partitions > n:
        raise DataError(
            f"data.min_partition_size={min_partition_size} x data.num_partitions="
            f"{num_partitions} exceeds the {n} training samples"
        )
    rng = np.random.default_rng(seed)
    by_class = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    concentration = np.full(num_partitions, alpha)
    smallest = 0
    for _ in range(max_tries):
        buckets: list[list[npt.NDArray[np.intp]]] = [[] for _ in range(num_partitions)]
        for members in by_class:
            shares = rng.dirichlet(concentration)
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
            for bucket, chunk in zip(buckets, np.split(members, cuts), strict=True):
                bucket.append(chunk)
        parts = [_sorted(np.concatenate(bucket)) for bucket in buckets]
        smallest = min(len(part) for part in parts)
        if smallest >= need:
            return parts
    raise DataError(
        f"dirichlet partitioning found no split with every partition >= {need} samples in "
        f"{max_tries} draws (alpha={alpha}, {num_partitions} partitions, {n} samples; the "
        f"last draw's smallest partition had {smallest}); raise data.dirichlet_alpha or lower "
        "data.min_partition_size / data.num_partitions"
    )


def shards(
    labels: npt.ArrayLike, num_partitions: int, shards_per_client: int, seed: int
) -> list[IndexArray]:
    """McMahan et al. (2017) pathological non-IID: sorted-by-label shards, k per client.

    Samples are shuffled before the stable sort so that the order within a label, and hence
    the shard contents, come from the seed rather than from the file order.
    """
    y = _as_labels(labels)
    n = len(y)
    _check_counts(n, num_partitions)
    if shards_per_client < 1:
        raise DataError(f"data.shards_per_client must be >= 1, got {shards_per_client}")
    total = num_partitions * shards_per_client
    if total > n:
        raise DataError(
            f"{num_partitions} partitions x {shards_per_client} shards = {total} shards, more "
            f"than the {n} training samples"
        )
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n)
    by_label = shuffled[np.argsort(y[shuffled], kind="stable")]
    pieces = np.array_split(by_label, total)
    owner = rng.permutation(total)
    return [
        _sorted(
            np.concatenate(
                [pieces[j] for j in owner[i * shards_per_client : (i + 1) * shards_per_client]]
            )
        )
        for i in range(num_partitions)
    ]


def natural(groups: npt.ArrayLike, num_partitions: int) -> list[IndexArray]:
    """One partition per natural group id 0..num_partitions-1 (e.g. Synthetic's devices)."""
    g = _as_labels(groups)
    if num_partitions < 1:
        raise DataError(f"data.num_partitions must be >= 1, got {num_partitions}")
    if g.size and (g.min() < 0 or g.max() >= num_partitions):
        raise DataError(
            f"natural partitioning: group ids span {g.min()}..{g.max()} but "
            f"data.num_partitions={num_partitions}"
        )
    parts = [np.flatnonzero(g == k).astype(np.int64) for k in range(num_partitions)]
    empty = [k for k, part in enumerate(parts) if len(part) == 0]
    if empty:
        raise DataError(f"natural partitioning: groups {empty[:10]} have no samples")
    return parts


def public_share(n: int, fraction: float) -> tuple[IndexArray, IndexArray]:
    """``(client pool, public)``: a fixed random ``fraction`` of ``n`` samples held back by
    the server (at least one sample, and at least one left for the clients)."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"data.public_fraction must be in (0, 1), got {fraction}")
    if n < 2:
        raise DataError(f"cannot hold back a public split from {n} training samples")
    size = min(n - 1, max(1, round(fraction * n)))
    order = np.random.default_rng(PUBLIC_SEED).permutation(n)
    return _sorted(order[size:]), _sorted(order[:size])
