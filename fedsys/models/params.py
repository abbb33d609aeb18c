"""Model size, as reported in logs and compared with the papers' parameter counts."""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not); buffers such as BatchNorm's
    running statistics are not parameters and are not counted."""
    return sum(p.numel() for p in model.parameters())
