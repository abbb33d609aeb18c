"""How much a stale update counts: s = server versions applied since the client downloaded.

FedBuff (Nguyen et al. 2022) scales each buffered update by 1/sqrt(1+s); the polynomial family
(1+s)^-a contains it (a = 0.5) and the constant weight (a = 0).
"""

from __future__ import annotations

from fedsys.errors import ConfigError


def staleness_weight(kind: str, staleness: int, exponent: float = 0.5) -> float:
    """The weight of an update ``staleness`` versions old under ``kind``."""
    if staleness < 0:
        raise ConfigError(f"staleness must be >= 0, got {staleness}")
    if kind == "constant":
        return 1.0
    if kind == "inverse_sqrt":
        return float((1.0 + staleness) ** -0.5)
    if kind == "polynomial":
        return float((1.0 + staleness) ** -exponent)
    raise ConfigError(f"unknown fedbuff.staleness {kind!r} (constant, inverse_sqrt, polynomial)")
