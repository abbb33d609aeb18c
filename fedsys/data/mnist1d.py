"""MNIST-1D (Greydanus 2020), generated offline and cached as ``.npz``.

The dataset is produced by the ``mnist1d`` package from its procedural templates, so no
download is needed. Its generator seeds numpy's and Python's *global* RNGs with the
dataset seed; we restore both afterwards, otherwise whether the cache was warm would change
every random draw the rest of the run makes.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedsys.data.cache import load_arrays, resolve_cache_dir, save_arrays
from fedsys.data.types import ArrayDataset, DatasetInfo
from fedsys.errors import DataError

# The seed of the published MNIST-1D (the package default). It is part of the dataset's
# identity, like MNIST's fixed images, so the experiment seed does not change it.
MNIST1D_SEED = 42
MNIST1D_INFO = DatasetInfo(input_shape=(40,), num_classes=10)
_SHAPES: dict[str, tuple[int, ...]] = {
    "x": (4000, 40),
    "y": (4000,),
    "x_test": (1000, 40),
    "y_test": (1000,),
}
_CACHE_VERSION = 1


def cache_file(cache_dir: Path | None) -> Path:
    """Where the generated arrays are cached for this cache directory setting."""
    name = f"mnist1d-seed{MNIST1D_SEED}-v{_CACHE_VERSION}.npz"
    return resolve_cache_dir(cache_dir) / name


def _generate() -> dict[str, npt.NDArray[np.generic]]:
    """Run the ``mnist1d`` generator (about a second) without leaking its global seeding."""
    import mnist1d.data  # deferred: the package pulls in matplotlib and requests

    args = mnist1d.data.get_dataset_args()
    args.seed = MNIST1D_SEED
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        raw = mnist1d.data.make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x": np.asarray(raw["x"], dtype=np.float32),
        "y": np.asarray(raw["y"], dtype=np.int64),
        "x_test": np.asarray(raw["x_test"], dtype=np.float32),
        "y_test": np.asarray(raw["y_test"], dtype=np.int64),
    }


def _well_formed(arrays: dict[str, npt.NDArray[np.generic]]) -> bool:
    return all(arrays[name].shape == shape for name, shape in _SHAPES.items())


def load_mnist1d(cache_dir: Path | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """Train (4000, 40) and test (1000, 40) splits, from the cache or freshly generated."""
    path = cache_file(cache_dir)
    arrays = load_arrays(path, tuple(_SHAPES))
    if arrays is None or not _well_formed(arrays):
        arrays = _generate()
        if not _well_formed(arrays):
            shapes = {name: arrays[name].shape for name in _SHAPES}
            raise DataError(f"the mnist1d package produced unexpected array shapes {shapes}")
        save_arrays(path, arrays)
    train = ArrayDataset(
        x=arrays["x"].astype(np.float32, copy=False), y=arrays["y"].astype(np.int64, copy=False)
    )
    test = ArrayDataset(
        x=arrays["x_test"].astype(np.float32, copy=False),
        y=arrays["y_test"].astype(np.int64, copy=False),
    )
    return train, test
