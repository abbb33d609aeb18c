"""Dataset names to loaders, and the per-process memo that clients rely on.

A simulation worker process serves many clients over many rounds, and each call would
otherwise re-read or regenerate the whole dataset and recompute the split. Both are
memoised per process on exactly the settings they depend on, so changing e.g.
``train.lr`` or ``data.num_partitions`` never reloads the data itself.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

from fedsys.config import DataConfig
from fedsys.data.mnist1d import MNIST1D_INFO, load_mnist1d
from fedsys.data.partition import dirichlet, iid, natural, public_share, shards
from fedsys.data.public import read_public_npz
from fedsys.data.readers import read_cifar10, read_idx_dataset
from fedsys.data.synthetic import (
    SYNTHETIC_INFO,
    make_synthetic,
    synthetic_device,
    synthetic_test,
)
from fedsys.data.types import ArrayDataset, DatasetInfo, IndexArray
from fedsys.errors import DataError

Loaded = tuple[ArrayDataset, ArrayDataset, DatasetInfo]

_LOCK = threading.RLock()
# Few distinct datasets live in one process; a small bound keeps a long test session or
# a sweep in one process from holding every dataset it ever touched.
_MAX_DATASETS = 4
_MAX_SPLITS = 16
# Per-client subsets kept per process: a worker plays a few clients per round, and a
# population of 10,000 must not leave 10,000 subsets (or 4,096) in every worker.
_MAX_CLIENTS = 256


@dataclass(frozen=True)
class _DataKey:
    """Everything a dataset's contents (and the place they are read from) depend on."""

    name: str
    path: Path | None = None
    cache_dir: Path | None = None
    seed: int | None = None
    synthetic: tuple[float, float, int, float, int] | None = None
    test_devices: int | None = None  # Synthetic: devices in the central test set
    public_fraction: float = 0.0


@dataclass(frozen=True)
class _SplitKey:
    """Everything a partitioning depends on besides the data; unused settings are None."""

    partitioner: str
    num_partitions: int
    seed: int
    dirichlet_alpha: float | None = None
    min_partition_size: int | None = None
    shards_per_client: int | None = None


def _data_key(cfg: DataConfig, seed: int) -> _DataKey:
    # A user-supplied public split leaves the whole training set to the clients.
    held_out = 0.0 if cfg.public_path is not None else cfg.public_fraction
    if cfg.name == "mnist1d":
        return _DataKey(cfg.name, cache_dir=cfg.cache_dir, public_fraction=held_out)
    if cfg.name == "synthetic":
        params = (
            cfg.synthetic_alpha,
            cfg.synthetic_beta,
            cfg.synthetic_devices,
            cfg.test_fraction,
            cfg.synthetic_max_samples,
        )
        return _DataKey(
            cfg.name,
            seed=seed,
            synthetic=params,
            test_devices=cfg.synthetic_test_devices,
            public_fraction=held_out,
        )
    if cfg.path is None:
        raise DataError(f"data.path is required for data.name={cfg.name!r}")
    path = Path(cfg.path).expanduser().resolve()
    return _DataKey(cfg.name, path=path, public_fraction=held_out)


def _split_key(cfg: DataConfig, seed: int) -> _SplitKey:
    if cfg.partitioner == "dirichlet":
        return _SplitKey(
            cfg.partitioner,
            cfg.num_partitions,
            seed,
            dirichlet_alpha=cfg.dirichlet_alpha,
            min_partition_size=cfg.min_partition_size,
        )
    if cfg.partitioner == "shards":
        return _SplitKey(
            cfg.partitioner, cfg.num_partitions, seed, shards_per_client=cfg.shards_per_client
        )
    return _SplitKey(cfg.partitioner, cfg.num_partitions, seed)


@functools.lru_cache(maxsize=_MAX_DATASETS)
def _load(key: _DataKey) -> Loaded:
    """(client pool, test, info): the training set less the server's public share."""
    train, test, info = _read(key)
    if key.public_fraction > 0:
        pool, _ = public_share(len(train), key.public_fraction)
        train = train.subset(pool)
    return train, test, info


def _read(key: _DataKey) -> Loaded:
    if key.name == "mnist1d":
        train, test = load_mnist1d(key.cache_dir)
        return train, test, MNIST1D_INFO
    if key.name == "synthetic" and key.synthetic is not None and key.seed is not None:
        alpha, beta, devices, test_fraction, max_samples = key.synthetic
        train, test = make_synthetic(alpha, beta, devices, test_fraction, key.seed, max_samples)
        return train, test, SYNTHETIC_INFO
    if key.name in ("mnist", "fashion_mnist") and key.path is not None:
        return read_idx_dataset(key.path)
    if key.name == "cifar10" and key.path is not None:
        return read_cifar10(key.path)
    raise DataError(f"unknown dataset data.name={key.name!r}")


def load_dataset(cfg: DataConfig, seed: int) -> tuple[ArrayDataset, ArrayDataset, DatasetInfo]:
    """(train, test, info) for ``cfg``; the same objects for the same settings in a process.

    ``seed`` only matters for generated data that depends on it (Synthetic); MNIST-1D is
    always the published dataset.
    """
    with _LOCK:
        return _load(_data_key(cfg, seed))


def load_public(cfg: DataConfig, seed: int) -> ArrayDataset:
    """The server's public split: ``data.public_path`` or the ``data.public_fraction`` share of
    the training set that :func:`client_partition` never hands out (distinct from the test
    split, so nothing tuned on it is judged on it)."""
    if cfg.public_path is not None:
        return read_public_npz(Path(cfg.public_path).expanduser())
    if cfg.public_fraction <= 0:
        raise DataError("no public split: set data.public_fraction (e.g. 0.1) or data.public_path")
    if _is_per_device(cfg):
        raise DataError(
            "data.public_fraction cannot hold back rows of Synthetic made device by device "
            "(partitioner 'natural'); give the server its own rows with data.public_path"
        )
    key = _data_key(cfg, seed)
    with _LOCK:
        train, _, _ = _read(key)
    _, public = public_share(len(train), key.public_fraction)
    return train.subset(public)


def _apply(split: _SplitKey, train: ArrayDataset, dataset: str) -> list[IndexArray]:
    k, seed = split.num_partitions, split.seed
    if split.partitioner == "iid":
        return iid(len(train), k, seed)
    if split.dirichlet_alpha is not None and split.min_partition_size is not None:
        return dirichlet(train.y, k, split.dirichlet_alpha, split.min_partition_size, seed)
    if split.shards_per_client is not None:
        return shards(train.y, k, split.shards_per_client, seed)
    if split.partitioner == "natural":
        if train.groups is None:
            raise DataError(
                f"data.partitioner='natural' needs per-sample groups, which {dataset!r} lacks"
            )
        return natural(train.groups, k)
    raise DataError(f"unknown partitioner data.partitioner={split.partitioner!r}")


def partition_indices(cfg: DataConfig, seed: int, train: ArrayDataset) -> list[IndexArray]:
    """The configured partitioner applied to ``train``: one index array per client."""
    return _apply(_split_key(cfg, seed), train, cfg.name)


@functools.lru_cache(maxsize=_MAX_SPLITS)
def _split(data: _DataKey, split: _SplitKey) -> tuple[IndexArray, ...]:
    train, _, _ = _load(data)
    return tuple(_apply(split, train, data.name))


@functools.lru_cache(maxsize=_MAX_CLIENTS)
def _client(data: _DataKey, split: _SplitKey, partition_id: int) -> ArrayDataset:
    train, _, _ = _load(data)
    return train.subset(_split(data, split)[partition_id])


@functools.lru_cache(maxsize=_MAX_CLIENTS)
def _device(data: _DataKey, device: int) -> tuple[ArrayDataset, ArrayDataset]:
    if data.synthetic is None or data.seed is None:
        raise DataError(f"dataset {data.name!r} has no per-device generator")
    alpha, beta, _, test_fraction, max_samples = data.synthetic
    return synthetic_device(alpha, beta, device, test_fraction, data.seed, max_samples)


def _is_per_device(cfg: DataConfig) -> bool:
    """Synthetic split by device: each client's data is made alone (O(1) in the population)."""
    return cfg.name == "synthetic" and cfg.partitioner == "natural"


def _check_partition(cfg: DataConfig, partition_id: int) -> None:
    if not 0 <= partition_id < cfg.num_partitions:
        raise DataError(
            f"partition_id {partition_id} is outside 0..{cfg.num_partitions - 1} "
            f"(data.num_partitions={cfg.num_partitions})"
        )


def client_partition(cfg: DataConfig, seed: int, partition_id: int) -> ArrayDataset:
    """Client ``partition_id``'s training subset, memoised for the life of the process."""
    _check_partition(cfg, partition_id)
    with _LOCK:
        if _is_per_device(cfg):
            return _device(_data_key(cfg, seed), partition_id)[0]
        return _client(_data_key(cfg, seed), _split_key(cfg, seed), partition_id)


def client_test_partition(cfg: DataConfig, seed: int, partition_id: int) -> ArrayDataset | None:
    """The client's own test share where the dataset gives each client one (Synthetic by
    device), else None (the client holds out part of its partition instead)."""
    _check_partition(cfg, partition_id)
    if not _is_per_device(cfg):
        return None
    with _LOCK:
        return _device(_data_key(cfg, seed), partition_id)[1]


def load_test(cfg: DataConfig, seed: int) -> tuple[ArrayDataset, DatasetInfo]:
    """(test, info): the server's held-out set without keeping the training set (Synthetic
    is made one device at a time; other datasets are loaded, and memoised, whole)."""
    if cfg.name == "synthetic":
        with _LOCK:
            return _synthetic_test(_data_key(cfg, seed)), SYNTHETIC_INFO
    _, test, info = load_dataset(cfg, seed)
    return test, info


@functools.lru_cache(maxsize=_MAX_DATASETS)
def _synthetic_test(key: _DataKey) -> ArrayDataset:
    if key.synthetic is None or key.seed is None:
        raise DataError(f"dataset {key.name!r} is not generated")
    alpha, beta, devices, test_fraction, max_samples = key.synthetic
    return synthetic_test(
        alpha, beta, devices, test_fraction, key.seed, max_samples, key.test_devices
    )


def dataset_info(cfg: DataConfig, seed: int) -> DatasetInfo:
    """Input shape and classes, without loading generated data that does not need it."""
    if cfg.name == "synthetic":
        return SYNTHETIC_INFO
    return load_dataset(cfg, seed)[2]


def clear_memo() -> None:
    """Forget every memoised dataset and split (for tests and long-lived processes)."""
    with _LOCK:
        _client.cache_clear()
        _device.cache_clear()
        _synthetic_test.cache_clear()
        _split.cache_clear()
        _load.cache_clear()
