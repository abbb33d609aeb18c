"""TopK: exact kept counts, largest magnitudes, and error feedback that converges."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Literal

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsys.codec import Quantize, Residual, Stage, TopK, decode_update, encode_update, kept_count
from fedsys.codec.coded import coded_from_tensors


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["0.01", "0.05", "0.1", "0.25", "0.3", "0.5", "1"]), st.integers(1, 10**7))
def test_kept_count_is_ceil_of_fraction_times_n(fraction: str, n: int) -> None:
    assert kept_count(float(fraction), n) == max(1, math.ceil(Fraction(fraction) * n))


@pytest.mark.parametrize("shape", [(1,), (7,), (30,), (10, 33), (4, 5, 6)])
def test_keeps_exactly_k_largest_per_tensor(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    out = TopK(0.1).encode(coded_from_tensors({"x": x}))["x"]
    k = kept_count(0.1, x.numel())
    assert out.count == k and out.positions is not None and out.positions.numel() == k
    assert bool((out.positions[1:] > out.positions[:-1]).all())
    kept = x.reshape(-1).abs()[out.positions]
    assert float(kept.min()) >= float(torch.topk(x.reshape(-1).abs(), k).values.min())


def test_ties_still_keep_exactly_k() -> None:
    x = torch.ones(100)
    out = TopK(0.25).encode(coded_from_tensors({"x": x}))["x"]
    assert out.positions is not None and out.positions.tolist() == list(range(25))


@pytest.mark.parametrize("bits", [16, 8, 4])
def test_empty_and_integer_tensors_pass(bits: Literal[16, 8, 4]) -> None:
    update = {"e": torch.zeros(0, 3), "n": torch.tensor(7)}
    pipelines: list[list[Stage]] = [
        [TopK(0.1)],
        [Quantize(bits=bits)],
        [TopK(0.1), Quantize(bits=bits)],
    ]
    for pipeline in pipelines:
        out = decode_update(encode_update(update, pipeline, residual=Residual()).payload)
        assert out["e"].shape == (0, 3) and out["n"].item() == 7
        assert out["n"].dtype == torch.int64


def _relative_gap(rounds: int, feedback: bool) -> float:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(2000, generator=gen)
    residual: Residual | None = Residual() if feedback else None
    sent_sum = torch.zeros(2000)
    true_sum = torch.zeros(2000)
    for _ in range(rounds):
        delta = base + 0.3 * torch.randn(2000, generator=gen)
        enc = encode_update({"w": delta}, [TopK(0.1), Quantize(bits=8)], residual=residual)
        residual = enc.residual
        sent_sum += decode_update(enc.payload)["w"]
        true_sum += delta
    if feedback:  # telescoping: everything not yet sent is exactly the residual
        assert residual is not None
        carried = torch.from_numpy(residual.arrays["w"])
        assert torch.allclose(sent_sum + carried, true_sum, atol=1e-3)
    return float((sent_sum - true_sum).norm() / true_sum.norm())


def test_error_feedback_makes_the_sum_of_sent_updates_converge() -> None:
    early, late = _relative_gap(10, True), _relative_gap(80, True)
    assert late < early / 3
    assert late < 0.1
    assert _relative_gap(80, False) > 0.5  # without feedback most of the signal is lost
