"""Where the direction check draws its line: below a fixed cosine and below the round's own.

A sign-flipped update points against the majority, so its cosine with the sum of the others
is strongly negative while honest ones cluster near their median. Late in training honest
updates are nearly orthogonal (cosines scattered around zero), and a fixed threshold alone
refuses the unlucky half of them. So an update must also be an outlier (a robust z-score
from the median absolute deviation, which a minority of attackers cannot move far) and point
against the others at least half as strongly as the median honest update points with them
(a flipped update mirrors the median): a flip of a meaningful update stays below every line.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

# The median absolute deviation times this estimates a normal distribution's standard deviation.
MAD_TO_SIGMA = 1.4826


def direction_threshold(cosines: Sequence[float], min_cosine: float, spread: float) -> float:
    """The cosine an update must reach: ``min_cosine``, lowered to ``spread`` robust standard
    deviations below the round's median cosine, and to minus half that median, when those lie
    lower (``spread`` 0: ``min_cosine`` alone)."""
    if spread <= 0 or len(cosines) < 3:
        return min_cosine
    median = statistics.median(cosines)
    sigma = MAD_TO_SIGMA * statistics.median(abs(c - median) for c in cosines)
    return min(min_cosine, median - spread * sigma, -0.5 * median)
