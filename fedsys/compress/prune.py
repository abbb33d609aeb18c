"""Structured pruning that physically removes channels (1-D CNN) or neurons (MLP).

Every hidden layer keeps the same share of its outputs, ranked by a named criterion (the L1
or L2 norm of each output's weights), and the next layer loses the matching inputs. Pruning
uniformly keeps the result the same architecture at a smaller width, so the pruned model is
described by a plain ``ModelConfig`` and rebuilt from the manifest like any other version.
(torch-pruning does general dependency-graph pruning but yields per-layer widths no config
can name; for these two layer chains, slicing by kept indices is a few lines, hence here.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fedsys.config import ModelConfig
from fedsys.data.types import DatasetInfo
from fedsys.errors import ConfigError
from fedsys.models import build_model
from fedsys.models.conv1d import Conv1dNet

PRUNABLE = ("mlp", "cnn1d")


def kept_width(width: int, fraction: float) -> int:
    """Outputs a layer of ``width`` keeps when ``fraction`` of them is removed (at least 1)."""
    return max(1, width - math.floor(width * fraction))


def _ranked(weight: torch.Tensor, keep: int, criterion: str) -> torch.Tensor:
    """Sorted indices of the ``keep`` outputs (rows along dim 0) with the largest norm."""
    p = 1 if criterion == "l1" else 2
    scores = weight.detach().flatten(1).norm(p=p, dim=1)
    return torch.sort(torch.topk(scores, keep).indices).values


def pruned_config(cfg: ModelConfig, fraction: float) -> ModelConfig:
    """The architecture left after pruning ``fraction`` of every hidden layer of ``cfg``."""
    if cfg.name not in PRUNABLE:
        raise ConfigError(
            f"compress: structured pruning supports model.name in {PRUNABLE}, not {cfg.name!r}"
        )
    return cfg.model_copy(
        update={
            "channels": kept_width(cfg.channels, fraction),
            "hidden": [kept_width(h, fraction) for h in cfg.hidden],
        }
    )


def _prune_mlp(src: nn.Module, dst: nn.Module, fraction: float, criterion: str) -> None:
    linears = [m for m in src.modules() if isinstance(m, nn.Linear)]
    targets = [m for m in dst.modules() if isinstance(m, nn.Linear)]
    kept_in: torch.Tensor | None = None
    for i, (old, new) in enumerate(zip(linears, targets, strict=True)):
        weight = old.weight.detach()
        if kept_in is not None:
            weight = weight[:, kept_in]
        last = i == len(linears) - 1
        rows = (
            torch.arange(weight.shape[0])
            if last
            else _ranked(weight, kept_width(weight.shape[0], fraction), criterion)
        )
        new.weight.data.copy_(weight[rows])
        new.bias.data.copy_(old.bias.detach()[rows])
        kept_in = rows


def _prune_cnn1d(src: Conv1dNet, dst: Conv1dNet, fraction: float, criterion: str) -> None:
    convs = [m for m in src.features if isinstance(m, nn.Conv1d)]
    targets = [m for m in dst.features if isinstance(m, nn.Conv1d)]
    kept_in: torch.Tensor | None = None
    for old, new in zip(convs, targets, strict=True):
        weight = old.weight.detach()
        if kept_in is not None:
            weight = weight[:, kept_in]
        rows = _ranked(weight, kept_width(weight.shape[0], fraction), criterion)
        new.weight.data.copy_(weight[rows])
        assert old.bias is not None and new.bias is not None
        new.bias.data.copy_(old.bias.detach()[rows])
        kept_in = rows
    assert kept_in is not None
    # The classifier reads the flattened (channels, length) map: column c * length + t.
    length = src.classifier.in_features // convs[-1].out_channels
    columns = (kept_in[:, None] * length + torch.arange(length)[None, :]).flatten()
    dst.classifier.weight.data.copy_(src.classifier.weight.detach()[:, columns])
    dst.classifier.bias.data.copy_(src.classifier.bias.detach())


def prune_structured(
    model: nn.Module, cfg: ModelConfig, info: DatasetInfo, fraction: float, criterion: str
) -> tuple[nn.Module, ModelConfig]:
    """A new, narrower model holding ``model``'s kept weights, and its config."""
    small_cfg = pruned_config(cfg, fraction)
    small = build_model(small_cfg, info)
    with torch.no_grad():
        if isinstance(model, Conv1dNet) and isinstance(small, Conv1dNet):
            _prune_cnn1d(model, small, fraction, criterion)
        else:
            _prune_mlp(model, small, fraction, criterion)
    return small, small_cfg
