"""Fully connected baselines: multinomial logistic regression and an MLP.

Logistic regression is the model FedProx uses on its Synthetic data (a convex problem,
where the theory applies); the MLP is McMahan et al.'s "2NN" with its default widths.
"""

from __future__ import annotations

import math

from torch import nn


def logreg(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Flatten, then one linear layer; softmax is left to the loss."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: list[int]) -> nn.Module:
    """Flatten, ``Linear + ReLU`` per hidden width, then a linear classifier."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
