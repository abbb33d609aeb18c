"""The adaptive norm bound: one client's update may not be much larger than honest ones.

An update counts when its L2 norm is at most ``multiplier x max(previous, current)``, where
*previous* is the median norm of the updates accepted in the last round that had any, and
*current* the median norm of every validated update of this round. An update within the bound
from the previous round is added the moment it arrives (streaming, O(model) memory); one above
it waits, as its validated payload, until the round's replies are all in and *current* is
known (a run's first round, without a previous median, waits whole). Honest norms may grow
several-fold between rounds (a FedOpt server step, a learning-rate change): *current* follows
them at once, so honest clients are never locked out by a stale reference.

Both references are medians of sets, not of arrival order, so every decision is deterministic
and a resumed run decides as an uninterrupted one would (the previous median is checkpointed).
With fewer than half the updates malicious, a median stays between honest norms.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from fedsys.defense_config import DefenseConfig


@dataclass(frozen=True)
class Verdict:
    """What to do with one update: its contribution is scaled by ``scale`` (1: as sent)."""

    scale: float
    reason: str | None = None  # set when the update is rejected

    @property
    def accepted(self) -> bool:
        return self.reason is None


ACCEPT = Verdict(1.0)


class NormBound:
    """Decides updates by their norm; carries the reference median from round to round."""

    def __init__(self, cfg: DefenseConfig, reference: float | None = None) -> None:
        self.enabled = cfg.norm_bound == "adaptive"
        self.multiplier = cfg.norm_multiplier
        self.action = cfg.norm_action
        self.reference = reference

    def limit(self, current: float | None = None) -> float | None:
        """The bound for this round (``current``: its median norm, once known)."""
        refs = [r for r in (self.reference, current) if r is not None and math.isfinite(r)]
        if not self.enabled or not refs or max(refs) <= 0:
            return None  # nothing to compare with (e.g. every update so far was zero)
        return self.multiplier * max(refs)

    def within_previous(self, norm: float | None) -> bool:
        """Whether an update may be added on arrival (within the previous round's bound)."""
        if not self.enabled or norm is None:
            return True
        if self.reference is None:
            return False
        bound = self.limit()
        return bound is None or norm <= bound

    def decide(self, norm: float | None, current: float | None = None) -> Verdict:
        bound = self.limit(current)
        if bound is None or norm is None or norm <= bound:
            return ACCEPT
        if self.action == "clip":
            return Verdict(bound / norm)
        return Verdict(
            0.0,
            f"update L2 norm {norm:.4g} exceeds {self.multiplier:g}x the median norm of "
            f"honest updates ({bound:.4g}; defense.norm_bound)",
        )

    @staticmethod
    def median(norms: list[float]) -> float | None:
        return statistics.median(norms) if norms else None

    def end_round(self, accepted_norms: list[float]) -> None:
        """The median of this round's accepted norms becomes the next round's reference."""
        if self.enabled and accepted_norms:
            self.reference = statistics.median(accepted_norms)
