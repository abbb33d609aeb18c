"""The CNN of McMahan et al. (2017, "Communication-Efficient Learning of Deep Networks").

Two 5x5 convolutions (32 and 64 channels, "same" padding), each followed by ReLU and 2x2
max pooling, a 512-unit fully connected layer with ReLU, and a linear classifier. On
1x28x28 MNIST that is exactly the paper's 1,663,370 parameters. Other image shapes work
too (e.g. 3x32x32): only the first fully connected layer's input size changes.
"""

from __future__ import annotations

import torch
from torch import nn


class McMahanCNN(nn.Module):
    """Input (N, C, H, W) with H, W >= 4; output (N, classes)."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(64 * (height // 4) * (width // 4), 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(torch.flatten(self.features(x), 1))
        return logits
