"""Loading the CIFAR-10 python batches without trusting pickle.

The official CIFAR-10 "python version" is a set of pickled dicts, and ``pickle.load`` runs
any callable a file names, so a tampered batch could execute code. Python's own types
(dict, list, str, bytes, int) need no lookup; the only globals the official files name are
the three numpy needs to rebuild the ``data`` uint8 array: ``_reconstruct``, ``ndarray``
and ``dtype``. Everything else is refused, and object arrays are rejected afterwards so
that no arbitrary Python objects can ride along inside an array.
"""

from __future__ import annotations

import importlib
import io
import pickle
from typing import Any

import numpy as np


def _numpy_reconstruct() -> Any:
    """numpy's array-rebuilding function, from wherever this numpy version keeps it."""
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy has no multiarray._reconstruct")


_RECONSTRUCT = _numpy_reconstruct()

# Pickles made by numpy 1.x (and the official files, from Python 2) name
# numpy.core.multiarray; numpy 2.x names numpy._core.multiarray. Both mean the same function.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose only importable names are numpy's array reconstruction."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy array reconstruction "
                "is allowed in a dataset file"
            ) from None


def _reject_object_arrays(root: Any) -> None:
    """Walk dicts, lists and tuples (iteratively: the stream may hold cycles)."""
    pending, seen = [root], set()
    while pending:
        value = pending.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, np.ndarray) and value.dtype.hasobject:
            raise pickle.UnpicklingError("refusing object arrays in a dataset file")
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list | tuple):
            pending.extend(value)


def restricted_loads(payload: bytes) -> Any:
    """Unpickle ``payload`` allowing only builtins and numpy arrays.

    ``encoding="latin1"`` is what numpy documents for Python 2 pickles of arrays (the
    official batches), and it turns Python 2 ``str`` keys into ``str``.
    Raises ``pickle.UnpicklingError`` (or another exception of a malformed stream).
    """
    value = _NumpyOnlyUnpickler(io.BytesIO(payload), encoding="latin1").load()
    _reject_object_arrays(value)
    return value
