"""Federated evaluation's summary and a client's held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from fedsys.client.holdout import holdout_mask
from fedsys.server.federated_eval import ClientEval, summarize


def test_summary_weights_the_mean_and_reports_the_tail() -> None:
    results = [
        ClientEval(k, n, loss=1.0 - a, accuracy=a)
        for k, (n, a) in enumerate([(100, 0.9), (100, 0.8), (10, 0.1), (50, 0.5)])
    ]
    s = summarize(results)
    assert s is not None
    assert s.clients == 4 and s.examples == 260
    assert s.accuracy == pytest.approx((90 + 80 + 1 + 25) / 260)
    assert s.worst_accuracy == 0.1
    assert s.p10_accuracy == pytest.approx(np.percentile([0.9, 0.8, 0.1, 0.5], 10))
    assert s.median_accuracy == pytest.approx(0.65)


def test_summary_ignores_unusable_reports() -> None:
    assert summarize([]) is None
    bad = [
        ClientEval(0, 0, 1.0, 0.5),
        ClientEval(1, 5, float("nan"), 0.5),
        ClientEval(2, 5, 1.0, 2.0),
    ]
    assert summarize(bad) is None


def test_holdout_is_seeded_per_client_and_never_empty() -> None:
    m = holdout_mask(50, 0.2, seed=0, client=3)
    assert m.sum() == 10
    np.testing.assert_array_equal(m, holdout_mask(50, 0.2, seed=0, client=3))
    assert not np.array_equal(m, holdout_mask(50, 0.2, seed=0, client=4))
    assert holdout_mask(3, 0.01, 0, 0).sum() == 1
    assert holdout_mask(1, 0.5, 0, 0).sum() == 0
