"""Which simulated clients are online in a round, and which drop out once sampled.

Every draw comes from a generator seeded by (run seed, round[, client]), so a seed gives the
same availability in every run and after a resume. ``probability``: one uniform draw per
client and round; ``trace``: a CSV of ``key,pattern`` lines, pattern a 0/1 string repeated
over rounds (clients missing from the file are always online).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedsys.errors import ConfigError
from fedsys.scale_config import AvailabilityConfig

_ONLINE_SALT, _DROP_SALT = 0xA7A1, 0xD209


def read_trace(path: Path) -> dict[int, str]:
    """``key -> pattern`` from a trace file; a clear error names the line that is wrong."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"population.availability.trace: cannot read {path}: {exc}") from exc
    patterns: dict[int, str] = {}
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or row[0].startswith("#") or row[0].strip() == "key":
            continue
        if len(row) != 2 or not row[0].strip().isdigit() or not set(row[1].strip()) <= {"0", "1"}:
            raise ConfigError(
                f"population.availability.trace {path} line {number}: expected 'key,pattern' "
                f"with pattern of 0/1, got {row!r}"
            )
        pattern = row[1].strip()
        if not pattern:
            raise ConfigError(f"population.availability.trace {path} line {number}: empty pattern")
        patterns[int(row[0])] = pattern
    return patterns


@dataclass
class Availability:
    """Online clients per round under ``cfg`` for a run seeded ``seed``."""

    cfg: AvailabilityConfig
    seed: int
    _trace: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cfg.model == "trace" and self.cfg.trace is not None:
            self._trace = read_trace(self.cfg.trace)

    def online(self, rnd: int, keys: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Mask over ``keys`` (sorted stable keys) of the clients online in round ``rnd``."""
        if self.cfg.model == "always":
            return np.ones(len(keys), dtype=bool)
        if self.cfg.model == "probability":
            # One draw per key from the round's stream, indexed by key: the same client gets
            # the same draw whatever other clients exist.
            size = int(keys.max()) + 1 if len(keys) else 0
            draws = np.random.default_rng([self.seed, rnd, _ONLINE_SALT]).random(size)
            return draws[keys] < self.cfg.online
        mask = np.ones(len(keys), dtype=bool)
        for i, key in enumerate(keys.tolist()):
            pattern = self._trace.get(int(key))
            if pattern is not None:
                mask[i] = pattern[(rnd - 1) % len(pattern)] == "1"
        return mask


def dropped_out(cfg: AvailabilityConfig, seed: int, rnd: int, client: int) -> bool:
    """Whether sampled client ``client`` drops out before replying in round ``rnd``."""
    if cfg.dropout <= 0:
        return False
    return bool(np.random.default_rng([seed, rnd, client, _DROP_SALT]).random() < cfg.dropout)
