"""What averaging LoRA adapters does to the model: the products B·A, exact or not.

The server averages whatever travels (FedAvg over the clients' deltas, through the codec,
encryption and secure aggregation unchanged). For adapters that average is:

- FedIT: mean(B)·mean(A), which is not the mean of the clients' B·A (the cross terms);
- FFA-LoRA: mean(B)·A with the shared frozen A, exactly the mean of the clients' B·A;
- HetLoRA: rank-r adapters zero-padded to the global rank before the mean (and truncated
  again by each client), so a client's update never touches components it does not train.

These functions measure that (tests, ``simulations/bench_lm.py``); the round loop needs none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

State = Mapping[str, torch.Tensor]


def weighted_mean(states: Sequence[State], weights: Sequence[float]) -> dict[str, torch.Tensor]:
    """Per-tensor weighted mean (FedAvg's rule), in float64 then cast back."""
    total = float(sum(weights))
    out: dict[str, torch.Tensor] = {}
    for k, t in states[0].items():
        acc = torch.zeros(t.shape, dtype=torch.float64)
        for s, w in zip(states, weights, strict=True):
            acc += s[k].double() * (w / total)
        out[k] = acc.to(t.dtype)
    return out


def module_names(state: State) -> list[str]:
    return sorted({k.split(".lora_")[0] for k in state if ".lora_B." in k})


def products(state: State, frozen_a: State | None = None) -> dict[str, torch.Tensor]:
    """B·A per adapted module (float64); A from ``frozen_a`` where the state has none (FFA)."""
    out: dict[str, torch.Tensor] = {}
    for module in module_names(state):
        a_key, b_key = f"{module}.lora_A.weight", f"{module}.lora_B.weight"
        a = state[a_key] if a_key in state else (frozen_a or {})[a_key]
        out[module] = state[b_key].double() @ a.double()
    return out


@dataclass(frozen=True)
class ProductGap:
    """How far the aggregated adapter's B·A is from the weighted mean of the clients' B·A."""

    max_abs: float
    relative: float  # ||aggregate - mean||_F / ||mean||_F over all modules


def product_gap(
    states: Sequence[State],
    weights: Sequence[float],
    aggregated: State,
    frozen_a: State | None = None,
) -> ProductGap:
    mean = weighted_mean([products(s, frozen_a) for s in states], weights)
    got = products(aggregated, frozen_a)
    diff2 = sum(float(((got[m] - mean[m]) ** 2).sum()) for m in mean)
    norm2 = sum(float((mean[m] ** 2).sum()) for m in mean)
    max_abs = max(float((got[m] - mean[m]).abs().max()) for m in mean)
    return ProductGap(max_abs=max_abs, relative=(diff2**0.5) / max(norm2**0.5, 1e-300))


def zero_pad(state: State, rank: int) -> dict[str, torch.Tensor]:
    """A rank-r adapter as a rank-``rank`` one: zero rows of A and zero columns of B."""
    out: dict[str, torch.Tensor] = {}
    for k, t in state.items():
        if ".lora_A." in k:
            padded = torch.zeros((rank, t.shape[1]), dtype=t.dtype)
            padded[: t.shape[0]] = t
        elif ".lora_B." in k:
            padded = torch.zeros((t.shape[0], rank), dtype=t.dtype)
            padded[:, : t.shape[1]] = t
        else:
            padded = t.clone()
        out[k] = padded
    return out


def truncate(state: State, rank: int) -> dict[str, torch.Tensor]:
    """The first ``rank`` components of each adapter (what a rank-r client keeps)."""
    out: dict[str, torch.Tensor] = {}
    for k, t in state.items():
        if ".lora_A." in k:
            out[k] = t[:rank].clone()
        elif ".lora_B." in k:
            out[k] = t[:, :rank].clone()
        else:
            out[k] = t.clone()
    return out
