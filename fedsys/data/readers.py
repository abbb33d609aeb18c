"""Readers for image datasets the user already has on disk (nothing is downloaded).

* MNIST and Fashion-MNIST: the four IDX files, raw or gzipped, parsed from their header
  so that a wrong or truncated file is reported precisely rather than mis-shaped.
* CIFAR-10: the official "python version" batches, read with a restricted unpickler
  (see ``fedsys.data.safe_pickle``).

Images are standardised with the training set's per-channel mean and standard deviation
(one channel for the greyscale sets), the usual preprocessing for these benchmarks, and
returned as float32 (N, C, H, W).
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fedsys.data.safe_pickle import restricted_loads
from fedsys.data.types import ArrayDataset, DatasetInfo, FloatArray, LabelArray
from fedsys.errors import DataError

NUM_CLASSES = 10
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_SUBDIR = "cifar-10-batches-py"
_CIFAR_SHAPE = (3, 32, 32)
_GZIP_MAGIC = b"\x1f\x8b"
# Element types an IDX file may declare (third magic byte): u8, i8, i16, i32, f32, f64.
# Only 0x08 occurs in these datasets; knowing the rest tells "not IDX" from "wrong IDX".
_IDX_TYPE_CODES = frozenset({0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E})


def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when they start with the gzip magic (whatever the name)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is not a valid gzip file: {exc}") from exc


def read_idx(path: Path, *, ndim: int) -> npt.NDArray[np.uint8]:
    """An unsigned-byte IDX array with ``ndim`` dimensions, checked against its header.

    The header is two zero bytes, a type code (0x08 = unsigned byte), the number of
    dimensions, then each dimension as a big-endian uint32.
    """
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path} is too short ({len(raw)} bytes) to be an IDX file")
    magic = int.from_bytes(raw[:4], "big")
    code, dims_count = raw[2], raw[3]
    if raw[:2] != b"\x00\x00" or code not in _IDX_TYPE_CODES:
        raise DataError(f"{path} is not an IDX file: bad magic number 0x{magic:08x}")
    if code != 0x08 or dims_count != ndim:
        raise DataError(
            f"{path}: magic number 0x{magic:08x} announces type 0x{code:02x} with "
            f"{dims_count} dimensions; expected 0x{0x800 + ndim:08x} (unsigned bytes, {ndim} "
            "dimensions)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims)
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: header announces shape {dims} ({expected} bytes) but the file holds "
            f"{len(raw) - header} data bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"missing dataset file {directory / name} (or {name}.gz) in data.path")


def _check_labels(labels: npt.NDArray[Any], count: int, source: str) -> LabelArray:
    if labels.shape != (count,):
        raise DataError(f"{source}: labels of shape {labels.shape} for {count} images")
    if count and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(
            f"{source}: labels span {labels.min()}..{labels.max()}, expected 0..{NUM_CLASSES - 1}"
        )
    return labels.astype(np.int64)


def standardise(
    train: npt.NDArray[np.uint8], test: npt.NDArray[np.uint8]
) -> tuple[FloatArray, FloatArray]:
    """(N, C, H, W) bytes to float32 standardised by the training set's channel statistics.

    Mean and variance come from a histogram of the 256 byte values, which is exact and
    avoids a float64 copy of the whole training set.
    """
    channels = train.shape[1]
    mean = np.empty(channels)
    std = np.empty(channels)
    values = np.arange(256, dtype=np.float64)
    for c in range(channels):
        counts = np.bincount(train[:, c].ravel(), minlength=256).astype(np.float64)
        total = max(counts.sum(), 1.0)
        mean[c] = (counts @ values) / total
        std[c] = math.sqrt(max((counts @ values**2) / total - mean[c] ** 2, 0.0))
    std[std == 0] = 1.0

    def apply(images: npt.NDArray[np.uint8]) -> FloatArray:
        out = images.astype(np.float32)
        shape = (1, channels) + (1,) * (images.ndim - 2)
        out -= mean.astype(np.float32).reshape(shape)
        out /= std.astype(np.float32).reshape(shape)
        return out

    return apply(train), apply(test)


def read_idx_dataset(path: Path) -> tuple[ArrayDataset, ArrayDataset, DatasetInfo]:
    """MNIST or Fashion-MNIST (same file layout) from the four IDX files in ``path``."""
    found = {key: _find(path, name) for key, name in IDX_FILES.items()}
    splits = []
    for split in ("train", "test"):
        images_file, labels_file = found[f"{split}_images"], found[f"{split}_labels"]
        images = read_idx(images_file, ndim=3)
        labels = read_idx(labels_file, ndim=1)
        if labels.shape[0] != images.shape[0]:
            raise DataError(
                f"{labels_file} has {labels.shape[0]} labels but {images_file} has "
                f"{images.shape[0]} images"
            )
        splits.append(
            (images[:, None, :, :], _check_labels(labels, images.shape[0], str(labels_file)))
        )
    (train_x, train_y), (test_x, test_y) = splits
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"train images are {train_x.shape[2:]} but test images are {test_x.shape[2:]} in {path}"
        )
    x_train, x_test = standardise(train_x, test_x)
    info = DatasetInfo(
        input_shape=tuple(int(d) for d in x_train.shape[1:]), num_classes=NUM_CLASSES
    )
    return ArrayDataset(x_train, train_y), ArrayDataset(x_test, test_y), info


def _entry(batch: dict[Any, Any], key: str) -> Any:
    """A batch entry by str key (Python 2 pickles read as latin1) or bytes key."""
    for candidate in (key, key.encode()):
        if candidate in batch:
            return batch[candidate]
    raise KeyError(key)


def read_cifar_batch(path: Path) -> tuple[npt.NDArray[np.uint8], LabelArray]:
    """One CIFAR-10 batch: images (N, 3, 32, 32) uint8 and labels (N,)."""
    payload = _read_bytes(path)
    try:
        batch = restricted_loads(payload)
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path}: {exc}") from exc
    except Exception as exc:  # a malformed pickle stream can raise almost anything
        raise DataError(f"{path} is not a readable CIFAR-10 batch: {exc!r}") from exc
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(batch).__name__}")
    try:
        data, labels = _entry(batch, "data"), _entry(batch, "labels")
    except KeyError as exc:
        raise DataError(f"{path}: batch has no {exc.args[0]!r} entry") from exc
    row = math.prod(_CIFAR_SHAPE)
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != row
    ):
        shape = getattr(data, "shape", None)
        dtype = getattr(data, "dtype", type(data).__name__)
        raise DataError(
            f"{path}: 'data' must be a uint8 array of shape (N, {row}), got {dtype} {shape}"
        )
    try:
        label_array = np.asarray(labels)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: 'labels' is not a list of integers") from exc
    if label_array.size and not np.issubdtype(label_array.dtype, np.integer):
        raise DataError(f"{path}: 'labels' is not a list of integers")
    images = data.reshape(-1, *_CIFAR_SHAPE)
    return images, _check_labels(label_array, images.shape[0], str(path))


def _cifar_dir(path: Path) -> Path:
    for directory in (path, path / CIFAR_SUBDIR):
        if (directory / CIFAR_TRAIN_BATCHES[0]).is_file():
            return directory
    raise DataError(
        f"no CIFAR-10 batches in {path}: expected {CIFAR_TRAIN_BATCHES[0]} there or in "
        f"{path / CIFAR_SUBDIR}"
    )


def read_cifar10(path: Path) -> tuple[ArrayDataset, ArrayDataset, DatasetInfo]:
    """CIFAR-10 from ``data_batch_1..5`` and ``test_batch`` (in ``path`` or its subfolder)."""
    directory = _cifar_dir(path)
    missing = [
        name
        for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH)
        if not (directory / name).is_file()
    ]
    if missing:
        raise DataError(f"missing CIFAR-10 files in {directory}: {', '.join(missing)}")
    parts = [read_cifar_batch(directory / name) for name in CIFAR_TRAIN_BATCHES]
    train_x = np.concatenate([images for images, _ in parts])
    train_y = np.concatenate([labels for _, labels in parts])
    test_x, test_y = read_cifar_batch(directory / CIFAR_TEST_BATCH)
    x_train, x_test = standardise(train_x, test_x)
    info = DatasetInfo(input_shape=_CIFAR_SHAPE, num_classes=NUM_CLASSES)
    return ArrayDataset(x_train, train_y), ArrayDataset(x_test, test_y), info
