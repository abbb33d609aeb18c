"""Where the direction check draws its line: below a fixed cosine and below the round's own.

A sign-flipped update points against the majority, so its cosine with the sum of the others
is strongly negative while honest ones cluster near their median. Late in training honest
updates are nearly orthogonal (cosines scattered around zero), and a fixed threshold alone
refuses the unlucky half of them; requiring an update to be an outlier too (a robust z-score
from the median absolute deviation, which a minority of attackers cannot move far) keeps
those. The price: when many clients flip, honest cosines spread and some flips sit above the
second line (measured in docs/benchmarks.md), so it is opt-in (``min_cosine_spread``).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

# The median absolute deviation times this estimates a normal distribution's standard deviation.
MAD_TO_SIGMA = 1.4826


def direction_threshold(cosines: Sequence[float], min_cosine: float, spread: float) -> float:
    """The cosine an update must reach: ``min_cosine``, lowered to ``spread`` robust standard
    deviations below the round's median cosine when that lies lower (``spread`` 0: fixed)."""
    if spread <= 0 or len(cosines) < 3:
        return min_cosine
    median = statistics.median(cosines)
    sigma = MAD_TO_SIGMA * statistics.median(abs(c - median) for c in cosines)
    return min(min_cosine, median - spread * sigma)
