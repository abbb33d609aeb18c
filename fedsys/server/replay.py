"""Replays: a client may not resend a payload it (or anyone) already sent in this run.

Sealed updates are bound to their round, but a genuine client can seal an old payload anew,
and plain payloads are bound to nothing. The server keeps the SHA-256 of every validated
payload (32 bytes each) for the whole run, in the checkpoint too, so a resumed run refuses
the same replays as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np


def digests_array(digests: set[bytes]) -> np.ndarray:
    """Payload digests as an (n, 32) uint8 array for the checkpoint (sorted: deterministic)."""
    joined = b"".join(sorted(digests))
    return np.frombuffer(joined, dtype=np.uint8).reshape(-1, 32).copy()


def digests_set(array: np.ndarray | None) -> set[bytes]:
    """Inverse of :func:`digests_array`."""
    if array is None:
        return set()
    return {bytes(row) for row in np.asarray(array, dtype=np.uint8).reshape(-1, 32)}
