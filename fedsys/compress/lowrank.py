"""Low-rank factorisation: each Linear (and 1x1 convolution) weight W (out x in) becomes
U_r sqrt(S_r) times sqrt(S_r) V_r^T, two smaller layers in sequence, where that saves weights.

The rank is fixed or the smallest that keeps a share of the squared singular values (the
"energy"). A factorised layer is an ``nn.Sequential`` of two plain layers, so the variant is
the original architecture plus a ``{layer: rank}`` map, and is rebuilt from those alone.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn


def _rank_for(singular: torch.Tensor, rank: int | None, energy: float) -> int:
    if rank is not None:
        return min(rank, len(singular))
    share = torch.cumsum(singular.double() ** 2, 0) / (singular.double() ** 2).sum()
    return int(torch.searchsorted(share, torch.tensor([energy], dtype=share.dtype)).item()) + 1


Factorable = nn.Linear | nn.Conv1d | nn.Conv2d


def _is_pointwise(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.Conv1d | nn.Conv2d)
        and all(k == 1 for k in m.kernel_size)
        and m.groups == 1
        and all(d == 1 for d in m.dilation)
    )


def _two_layers(layer: Factorable, r: int) -> tuple[Factorable, Factorable]:
    """An untrained two-layer stand-in for ``layer`` with inner width ``r``."""
    if isinstance(layer, nn.Linear):
        return (
            nn.Linear(layer.in_features, r, bias=False),
            nn.Linear(r, layer.out_features, bias=layer.bias is not None),
        )
    bias = layer.bias is not None
    stride, padding = cast(Any, layer.stride), cast(Any, layer.padding)
    if isinstance(layer, nn.Conv1d):
        return (
            nn.Conv1d(layer.in_channels, r, 1, stride, padding, bias=False),
            nn.Conv1d(r, layer.out_channels, 1, bias=bias),
        )
    return (
        nn.Conv2d(layer.in_channels, r, 1, stride, padding, bias=False),
        nn.Conv2d(r, layer.out_channels, 1, bias=bias),
    )


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _candidates(model: nn.Module) -> list[tuple[str, Factorable]]:
    return [
        (name, cast(Factorable, m))
        for name, m in model.named_modules()
        if name and (isinstance(m, nn.Linear) or _is_pointwise(m))
    ]


def factorise(model: nn.Module, rank: int | None, energy: float) -> dict[str, int]:
    """Factorise ``model`` in place where it saves weights; returns ``{layer name: rank}``."""
    ranks: dict[str, int] = {}
    for name, layer in _candidates(model):
        weight = layer.weight.detach().flatten(1).double()  # (out, in)
        out_dim, in_dim = weight.shape
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        r = _rank_for(s, rank, energy)
        if r * (out_dim + in_dim) >= out_dim * in_dim:
            continue
        root = s[:r].sqrt()
        first, second = _two_layers(layer, r)
        with torch.no_grad():
            first.weight.copy_((root[:, None] * vh[:r]).reshape(first.weight.shape).float())
            second.weight.copy_((u[:, :r] * root[None, :]).reshape(second.weight.shape).float())
            if layer.bias is not None and second.bias is not None:
                second.bias.copy_(layer.bias.detach())
        _replace(model, name, nn.Sequential(first, second))
        ranks[name] = r
    return ranks


def apply_ranks(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """Give a freshly built ``model`` the factorised shape ``ranks`` describes (weights to be
    loaded afterwards); ValueError names a layer that is missing or cannot be factorised."""
    layers = dict(_candidates(model))
    for name, r in ranks.items():
        if name not in layers:
            raise ValueError(f"low-rank layer {name!r} is not a Linear or 1x1 conv of the model")
        if r < 1:
            raise ValueError(f"low-rank layer {name!r} has rank {r}")
        _replace(model, name, nn.Sequential(*_two_layers(layers[name], r)))
    return model
