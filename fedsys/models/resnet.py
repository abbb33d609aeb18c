"""ResNet-8 for 32x32 images, in the layout of He et al.'s CIFAR ResNets (2016, sec. 4.2).

A 3x3 stem, then three stages of one basic block each (widths w, 2w, 4w; the second and
third halve the resolution), global average pooling and a linear classifier: 6n+2 = 8
layers with n = 1. ResNet-8 rather than ResNet-20 because clients train on CPUs; the
downsampling shortcut is a 1x1 convolution with BatchNorm (option B).

BatchNorm's running statistics are buffers, so they travel in ``state_dict`` along with the
weights; ``num_batches_tracked`` is an int64 buffer.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

STAGES = 3


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with an identity (or projected) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """Input (N, C, H, W); output (N, classes). ``width`` is the first stage's channels."""

    def __init__(self, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        channels = width
        for stage in range(STAGES):
            out_channels = width * 2**stage
            blocks.append(BasicBlock(channels, out_channels, stride=1 if stage == 0 else 2))
            channels = out_channels
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pool(self.stages(self.stem(x)))
        logits: torch.Tensor = self.classifier(torch.flatten(out, 1))
        return logits
