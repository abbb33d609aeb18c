"""The last line of defence: a model with a NaN or infinite value never becomes the global one.

Per-update validation already bounds every decoded value, so this should never fire; it
guards against what validation cannot see (a strategy's own arithmetic, FedOpt's moments).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def non_finite(arrays: Mapping[str, np.ndarray]) -> str | None:
    """Why ``arrays`` cannot be a model (the first tensor holding NaN or inf), or None."""
    for name, value in arrays.items():
        if value.dtype.kind == "f" and not bool(np.isfinite(value).all()):
            return f"the aggregated model holds NaN or infinite values (tensor {name!r})"
    return None
