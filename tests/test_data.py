"""Datasets, readers, partitioners and the per-process memo."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedsys.data.mnist1d as mnist1d_module
from fedsys.config import DataConfig
from fedsys.data import (
    ArrayDataset,
    client_partition,
    dirichlet,
    iid,
    load_dataset,
    natural,
    partition_indices,
    shards,
)
from fedsys.data.cache import load_arrays, resolve_cache_dir, save_arrays
from fedsys.data.readers import read_cifar10, read_idx, read_idx_dataset
from fedsys.data.synthetic import make_synthetic
from fedsys.errors import DataError

# --- helpers -------------------------------------------------------------------------------


def write_idx(path: Path, array: npt.NDArray[np.uint8], *, gz: bool) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def write_mnist(directory: Path, *, gz: bool, n_train: int = 12, n_test: int = 5) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(directory / name, array, gz=gz)
    return arrays


def cifar_batch(n: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "batch_label": f"batch {seed}",
        "labels": [int(v) for v in rng.integers(0, 10, n)],
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "filenames": [f"img_{i}.png" for i in range(n)],
    }


def write_cifar(directory: Path, n: int = 4) -> dict[str, dict[str, Any]]:
    directory.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    batches = {name: cifar_batch(n, seed) for seed, name in enumerate(names)}
    for name, batch in batches.items():
        (directory / name).write_bytes(pickle.dumps(batch))
    return batches


def _short_string(text: bytes) -> bytes:
    return b"U" + bytes([len(text)]) + text


def python2_cifar_pickle(data: npt.NDArray[np.uint8], labels: list[int]) -> bytes:
    """A batch as the official files store it: protocol 2 from Python 2, where the array
    bytes are a Python 2 ``str`` and numpy lives in ``numpy.core.multiarray``."""
    rows, cols = data.shape
    payload = data.tobytes()
    out = b"\x80\x02}(" + _short_string(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
    out += _short_string(b"b") + b"\x87R"
    out += b"(K\x01" + b"M" + struct.pack("<H", rows) + b"M" + struct.pack("<H", cols) + b"\x86"
    out += b"cnumpy\ndtype\n" + _short_string(b"u1") + b"K\x00K\x01\x87R"
    out += b"(K\x03" + _short_string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    out += b"\x89T" + struct.pack("<I", len(payload)) + payload + b"tb"
    out += _short_string(b"labels") + b"](" + b"".join(b"K" + bytes([v]) for v in labels)
    return out + b"eu."


def assert_disjoint(parts: list[npt.NDArray[np.int64]]) -> None:
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)


# --- IDX (MNIST / Fashion-MNIST) -----------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_files_read_back(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path, gz=gz)
    train, test, info = read_idx_dataset(tmp_path)
    assert info.input_shape == (1, 28, 28)
    assert info.num_classes == 10
    assert train.x.shape == (12, 1, 28, 28)
    assert test.x.shape == (5, 1, 28, 28)
    assert train.x.dtype == np.float32
    np.testing.assert_array_equal(train.y, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(test.y, arrays["t10k-labels-idx1-ubyte"])
    raw = arrays["train-images-idx3-ubyte"].astype(np.float64)
    expected = (raw - raw.mean()) / raw.std()
    np.testing.assert_allclose(train.x[:, 0], expected, rtol=1e-5, atol=1e-5)
    raw_test = arrays["t10k-images-idx3-ubyte"].astype(np.float64)
    np.testing.assert_allclose(
        test.x[:, 0], (raw_test - raw.mean()) / raw.std(), rtol=1e-5, atol=1e-5
    )


def test_fashion_mnist_loads_through_registry(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=True)
    train, test, info = load_dataset(DataConfig(name="fashion_mnist", path=tmp_path), seed=0)
    assert (len(train), len(test)) == (12, 5)
    assert info.input_shape == (1, 28, 28)


def test_idx_bad_magic_names_the_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x12\x34\x08\x03" + bad.read_bytes()[4:])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*magic"):
        read_idx_dataset(tmp_path)


def test_idx_wrong_dimensions_are_refused(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels", np.zeros(4, dtype=np.uint8), gz=False)
    with pytest.raises(DataError, match="0x00000803"):
        read_idx(path, ndim=3)


def test_idx_truncated_file_is_refused(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images", np.zeros((3, 28, 28), dtype=np.uint8), gz=False)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"images.*2342 data bytes"):
        read_idx(path, ndim=3)


def test_idx_corrupt_gzip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz.*gzip"):
        read_idx(path, ndim=1)


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8), gz=False)
    with pytest.raises(DataError, match="4 labels"):
        read_idx_dataset(tmp_path)


def test_idx_missing_file_is_named(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=False)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        read_idx_dataset(tmp_path)


# --- CIFAR-10 ------------------------------------------------------------------------------


@pytest.mark.parametrize("subdir", ["", "cifar-10-batches-py"])
def test_cifar_batches_read_back(tmp_path: Path, subdir: str) -> None:
    batches = write_cifar(tmp_path / subdir)
    train, test, info = read_cifar10(tmp_path)
    assert info.input_shape == (3, 32, 32)
    assert train.x.shape == (20, 3, 32, 32)
    assert test.x.shape == (4, 3, 32, 32)
    assert train.x.dtype == np.float32
    train_labels = [v for i in range(1, 6) for v in batches[f"data_batch_{i}"]["labels"]]
    np.testing.assert_array_equal(train.y, train_labels)
    np.testing.assert_array_equal(test.y, batches["test_batch"]["labels"])
    # Standardised per channel with the training statistics.
    np.testing.assert_allclose(train.x.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.x.std(axis=(0, 2, 3)), 1.0, atol=1e-4)
    # Row layout: the first 1024 bytes are the red plane, row-major 32x32.
    raw = np.concatenate([batches[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    red = raw[:, :1024].astype(np.float64)
    expected = (red[0].reshape(32, 32) - red.mean()) / red.std()
    np.testing.assert_allclose(train.x[0, 0], expected, rtol=1e-5, atol=1e-5)


def test_cifar_official_python2_format(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    data = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072).astype(np.uint8)
    (tmp_path / "test_batch").write_bytes(python2_cifar_pickle(data, [7, 3]))
    train, test, _ = read_cifar10(tmp_path)
    assert len(train) == 20
    assert test.y.tolist() == [7, 3]
    assert test.x.shape == (2, 3, 32, 32)
    # Same pixels as the array, standardised with the (unchanged) training statistics.
    assert np.argmax(test.x[0, 0].ravel()) == np.argmax(data[0, :1024])


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_cifar_malicious_pickle_is_refused(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = {"data": _RunsShell(marker), "labels": [0]}
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(evil))
    with pytest.raises(DataError, match=r"data_batch_3.*(posix|os)\.system"):
        read_cifar10(tmp_path)
    assert not marker.exists()


def test_cifar_pickle_with_other_numpy_global_is_refused(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(
        pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0]}, protocol=5)
    )
    with pytest.raises(DataError, match=r"test_batch.*_frombuffer"):
        read_cifar10(tmp_path)


def test_cifar_wrong_contents(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({"data": np.zeros((2, 10), np.uint8)}))
    with pytest.raises(DataError, match=r"data_batch_1.*labels"):
        read_cifar10(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(
        pickle.dumps({"data": np.zeros((2, 10), np.uint8), "labels": [0, 1]})
    )
    with pytest.raises(DataError, match=r"data_batch_1.*shape \(N, 3072\)"):
        read_cifar10(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="data_batch_1"):
        read_cifar10(tmp_path)


def test_cifar_missing_batch_is_named(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4"):
        read_cifar10(tmp_path)
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        read_cifar10(tmp_path / "elsewhere")


# --- partitioners --------------------------------------------------------------------------


LABELS = np.repeat(np.arange(10), 100)


def test_iid_is_deterministic_disjoint_and_complete() -> None:
    parts = iid(1000, 7, seed=3)
    again = iid(1000, 7, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, iid(1000, 7, 4), strict=True))
    assert_disjoint(parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(1000))
    assert {len(p) for p in parts} <= {142, 143}


def test_shards_give_few_labels_per_client() -> None:
    parts = shards(LABELS, 10, 2, seed=0)
    assert_disjoint(parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(1000))
    assert all(len(np.unique(LABELS[p])) <= 2 for p in parts)
    assert all(np.array_equal(a, b) for a, b in zip(parts, shards(LABELS, 10, 2, 0), strict=True))


def test_dirichlet_respects_min_size_and_is_deterministic() -> None:
    parts = dirichlet(LABELS, 10, alpha=0.5, min_partition_size=30, seed=1)
    assert min(len(p) for p in parts) >= 30
    assert_disjoint(parts)
    again = dirichlet(LABELS, 10, alpha=0.5, min_partition_size=30, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_dirichlet_low_alpha_skews_labels() -> None:
    def skew(alpha: float) -> float:
        parts = dirichlet(LABELS, 10, alpha=alpha, min_partition_size=1, seed=0)
        hist = np.stack([np.bincount(LABELS[p], minlength=10) / len(p) for p in parts])
        return float(np.abs(hist - 0.1).sum(axis=1).mean())

    assert skew(0.05) > 1.0
    assert skew(100.0) < 0.3


def test_dirichlet_impossible_settings() -> None:
    with pytest.raises(DataError, match="min_partition_size"):
        dirichlet(LABELS, 10, alpha=0.5, min_partition_size=101, seed=0)
    with pytest.raises(DataError, match="draws"):
        dirichlet(LABELS, 100, alpha=0.001, min_partition_size=10, seed=0, max_tries=5)


def test_impossible_partitionings_raise() -> None:
    with pytest.raises(DataError, match="5 samples into 6"):
        iid(5, 6, seed=0)
    with pytest.raises(DataError, match="shards"):
        shards(np.zeros(10, dtype=np.int64), 4, 3, seed=0)
    with pytest.raises(DataError, match="group ids"):
        natural(np.array([0, 1, 2]), 2)
    with pytest.raises(DataError, match=r"groups \[1\]"):
        natural(np.array([0, 0, 2]), 3)
    with pytest.raises(DataError, match="integers"):
        dirichlet(np.array([0.5, 1.5]), 1, 1.0, 1, seed=0)


def test_natural_follows_groups() -> None:
    groups = np.array([2, 0, 1, 0, 2, 2])
    parts = natural(groups, 3)
    assert [p.tolist() for p in parts] == [[1, 3], [2], [0, 4, 5]]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    k=st.integers(1, 20),
    classes=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    method=st.sampled_from(["iid", "shards", "dirichlet"]),
)
def test_partitions_are_disjoint_complete_and_nonempty(
    n: int, k: int, classes: int, seed: int, method: str
) -> None:
    labels = np.random.default_rng(seed).integers(0, classes, n)
    try:
        if method == "iid":
            parts = iid(n, k, seed)
        elif method == "shards":
            parts = shards(labels, k, 2, seed)
        else:
            parts = dirichlet(labels, k, 1.0, 0, seed)
    except DataError:
        assert k > n or (method == "shards" and 2 * k > n) or method == "dirichlet"
        return
    assert len(parts) == k
    assert all(len(p) > 0 for p in parts)
    assert all(p.dtype == np.int64 for p in parts)
    assert_disjoint(parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(n))


# --- Synthetic -----------------------------------------------------------------------------


def test_synthetic_shape_and_heterogeneity() -> None:
    train, test = make_synthetic(1.0, 1.0, devices=30, test_fraction=0.2, seed=0)
    assert train.x.shape[1] == 60
    assert train.x.dtype == np.float32
    assert train.groups is not None and test.groups is not None
    assert set(np.unique(train.groups)) == set(range(30))
    assert set(np.unique(test.groups)) == set(range(30))
    assert set(np.unique(train.y)) <= set(range(10))
    assert len(np.unique(train.y)) >= 5
    sizes = np.bincount(train.groups)
    assert sizes.max() > 4 * sizes.min()
    # Each device keeps about test_fraction of its samples for testing.
    shares = np.bincount(test.groups) / (np.bincount(test.groups) + sizes)
    np.testing.assert_allclose(shares, 0.2, atol=0.02)


def test_synthetic_is_deterministic_per_seed() -> None:
    a, _ = make_synthetic(0.5, 0.5, devices=5, test_fraction=0.1, seed=7)
    b, _ = make_synthetic(0.5, 0.5, devices=5, test_fraction=0.1, seed=7)
    c, _ = make_synthetic(0.5, 0.5, devices=5, test_fraction=0.1, seed=8)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.x.shape != c.x.shape or not np.array_equal(a.x, c.x)


def test_synthetic_natural_partition_is_one_device_per_client() -> None:
    cfg = DataConfig(name="synthetic", partitioner="natural", num_partitions=30)
    train, _, info = load_dataset(cfg, seed=2)
    assert info.input_shape == (60,)
    assert info.num_classes == 10
    client = client_partition(cfg, seed=2, partition_id=4)
    assert client.groups is not None
    assert set(client.groups.tolist()) == {4}
    assert train.groups is not None
    assert len(client) == int((train.groups == 4).sum())


# --- MNIST-1D and its cache ----------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    mnist1d_module.load_mnist1d(cache)
    return cache


def test_mnist1d_shapes(mnist1d_cache: Path) -> None:
    train, test, info = load_dataset(DataConfig(cache_dir=mnist1d_cache), seed=0)
    assert train.x.shape == (4000, 40)
    assert test.x.shape == (1000, 40)
    assert train.x.dtype == np.float32
    assert train.y.dtype == np.int64
    assert set(np.unique(train.y)) == set(range(10))
    assert info.input_shape == (40,)


def test_mnist1d_cache_is_reused(mnist1d_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = list(mnist1d_cache.iterdir())
    assert [f.suffix for f in files] == [".npz"]  # no temporary files left behind
    first, _ = mnist1d_module.load_mnist1d(mnist1d_cache)

    def fail() -> None:
        raise AssertionError("regenerated although the cache was warm")

    monkeypatch.setattr(mnist1d_module, "_generate", fail)
    again, _ = mnist1d_module.load_mnist1d(mnist1d_cache)
    np.testing.assert_array_equal(first.x, again.x)


def test_mnist1d_is_the_seeded_dataset(mnist1d_cache: Path) -> None:
    # Pinned values: the generator is seeded (numpy's legacy stream is stable by policy).
    train, test = mnist1d_module.load_mnist1d(mnist1d_cache)
    assert train.y[:20].tolist() == [2, 6, 4, 5, 6, 6, 6, 0, 3, 1, 6, 9, 4, 3, 4, 5, 1, 9, 0, 3]
    assert test.y[:10].tolist() == [2, 6, 3, 9, 4, 3, 1, 9, 5, 2]
    np.testing.assert_allclose(train.x[0, :3], [-0.332006, -0.471910, -0.778697], atol=1e-5)


def test_mnist1d_generation_keeps_global_rng(monkeypatch: pytest.MonkeyPatch) -> None:
    import random

    import mnist1d.data

    def reseeding_generator(args: Any) -> dict[str, npt.NDArray[np.generic]]:
        np.random.seed(args.seed)
        random.seed(args.seed)
        return {
            "x": np.zeros((4000, 40)),
            "y": np.zeros(4000, np.int64),
            "x_test": np.zeros((1000, 40)),
            "y_test": np.zeros(1000, np.int64),
        }

    monkeypatch.setattr(mnist1d.data, "make_dataset", reseeding_generator)
    np.random.seed(123)
    random.seed(123)
    expected = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    generated = mnist1d_module._generate()
    assert (np.random.random(), random.random()) == expected
    assert generated["x"].dtype == np.float32


def test_mnist1d_damaged_cache_is_regenerated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = mnist1d_module.cache_file(tmp_path)
    path.write_bytes(b"not a zip file")
    fake = {
        "x": np.ones((4000, 40), np.float32),
        "y": np.zeros(4000, np.int64),
        "x_test": np.ones((1000, 40), np.float32),
        "y_test": np.zeros(1000, np.int64),
    }
    monkeypatch.setattr(mnist1d_module, "_generate", lambda: fake)
    train, _ = mnist1d_module.load_mnist1d(tmp_path)
    assert float(train.x.sum()) == 4000 * 40
    assert load_arrays(path, ("x",)) is not None


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDSYS_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir(None) == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "cfg") == tmp_path / "cfg"
    monkeypatch.delenv("FEDSYS_CACHE_DIR")
    assert resolve_cache_dir(None) == Path.home() / ".cache" / "fedsys"


def test_save_arrays_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.npz"
    save_arrays(target, {"a": np.arange(3)})
    save_arrays(target, {"a": np.arange(4)})
    assert [p.name for p in target.parent.iterdir()] == ["a.npz"]
    with np.load(target) as archive:
        assert archive["a"].tolist() == [0, 1, 2, 3]


# --- registry and memo ---------------------------------------------------------------------


def test_load_dataset_is_memoised(mnist1d_cache: Path) -> None:
    cfg = DataConfig(cache_dir=mnist1d_cache)
    first = load_dataset(cfg, seed=0)
    assert load_dataset(cfg, seed=0) is first
    other_split = DataConfig(cache_dir=mnist1d_cache, num_partitions=3, partitioner="shards")
    assert load_dataset(other_split, seed=5)[0] is first[0]


def test_client_partition_memo_and_bounds(mnist1d_cache: Path) -> None:
    cfg = DataConfig(cache_dir=mnist1d_cache, num_partitions=4)
    parts = [client_partition(cfg, seed=1, partition_id=i) for i in range(4)]
    assert client_partition(cfg, seed=1, partition_id=2) is parts[2]
    assert sum(len(p) for p in parts) == 4000
    train, _, _ = load_dataset(cfg, seed=1)
    indices = partition_indices(cfg, 1, train)
    np.testing.assert_array_equal(parts[3].y, train.y[indices[3]])
    with pytest.raises(DataError, match="partition_id 4"):
        client_partition(cfg, seed=1, partition_id=4)
    with pytest.raises(DataError, match="partition_id -1"):
        client_partition(cfg, seed=1, partition_id=-1)


def test_natural_needs_groups() -> None:
    cfg = DataConfig(name="synthetic", partitioner="natural", num_partitions=30)
    plain = ArrayDataset(np.zeros((40, 2), np.float32), np.zeros(40, np.int64))
    with pytest.raises(DataError, match="groups"):
        partition_indices(cfg, 0, plain)


def test_array_dataset_validates() -> None:
    with pytest.raises(DataError, match="float32"):
        ArrayDataset(np.zeros((2, 3)), np.zeros(2, np.int64))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="labels"):
        ArrayDataset(np.zeros((2, 3), np.float32), np.zeros(3, np.int64))
    data = ArrayDataset(np.arange(6, dtype=np.float32).reshape(3, 2), np.arange(3, dtype=np.int64))
    sub = data.subset(np.array([2, 0]))
    assert len(sub) == 2
    assert sub.x.tolist() == [[4.0, 5.0], [0.0, 1.0]]
