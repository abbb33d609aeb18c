"""Federated evaluation's summary: what the sampled clients' own held-out data says.

Central evaluation measures the global model on one pooled test set; on non-IID data that
hides the clients it serves badly. The summary gives the example-weighted mean (comparable
to the central figure), the worst client and the 10th percentile over clients (each client
counted once, whatever its size).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClientEval:
    """One client's evaluation of the global model on its own held-out data."""

    client: int
    num_examples: int
    loss: float
    accuracy: float


@dataclass(frozen=True)
class FederatedEval:
    """The distribution of the sampled clients' accuracies."""

    clients: int
    examples: int
    accuracy: float  # weighted by examples
    loss: float  # weighted by examples
    worst_accuracy: float
    p10_accuracy: float
    median_accuracy: float


def summarize(results: list[ClientEval]) -> FederatedEval | None:
    """None when no client reported (every evaluation failed or was refused)."""
    usable = [
        r
        for r in results
        if r.num_examples > 0 and np.isfinite(r.loss) and 0.0 <= r.accuracy <= 1.0
    ]
    if not usable:
        return None
    n = np.array([r.num_examples for r in usable], dtype=np.float64)
    acc = np.array([r.accuracy for r in usable], dtype=np.float64)
    loss = np.array([r.loss for r in usable], dtype=np.float64)
    return FederatedEval(
        clients=len(usable),
        examples=int(n.sum()),
        accuracy=float((n * acc).sum() / n.sum()),
        loss=float((n * loss).sum() / n.sum()),
        worst_accuracy=float(acc.min()),
        p10_accuracy=float(np.percentile(acc, 10)),
        median_accuracy=float(np.median(acc)),
    )
