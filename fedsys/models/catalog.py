"""Model names to constructors, checked against the dataset's input shape.

The config names the architecture; the dataset supplies the input shape and class count,
so the same model name works on every dataset it makes sense for, and an architecture
that cannot take the data (e.g. ``cnn_mnist`` on 1-D signals) fails at build time with a
ConfigError instead of a shape error deep inside the first forward pass.
"""

from __future__ import annotations

from torch import nn

from fedsys.config import ModelConfig
from fedsys.data.types import DatasetInfo
from fedsys.errors import ConfigError
from fedsys.models.cnn import McMahanCNN
from fedsys.models.conv1d import Conv1dNet
from fedsys.models.dense import logreg, mlp
from fedsys.models.resnet import ResNetCifar


def _image_shape(cfg: ModelConfig, info: DatasetInfo, min_side: int) -> tuple[int, int, int]:
    shape = info.input_shape
    if len(shape) != 3 or min(shape[1:]) < min_side:
        raise ConfigError(
            f"model.name={cfg.name!r} needs image inputs (channels, height, width) at least "
            f"{min_side}x{min_side}; the dataset gives shape {shape}"
        )
    return shape[0], shape[1], shape[2]


def resnet_width(cfg: ModelConfig) -> int:
    """ResNet's first-stage width: half of ``model.channels``.

    The default ``channels`` (32) is sized for the 1-D CNN; halving it gives He et al.'s
    16-32-64 CIFAR ResNet by default while keeping the width configurable.
    """
    return max(1, cfg.channels // 2)


def build_model(cfg: ModelConfig, info: DatasetInfo) -> nn.Module:
    """A freshly initialised model; set ``torch.manual_seed`` first for reproducible weights."""
    if info.num_classes < 2:
        raise ConfigError(
            f"a classifier needs at least 2 classes, the dataset has {info.num_classes}"
        )
    if cfg.name == "logreg":
        return logreg(info.input_shape, info.num_classes)
    if cfg.name == "mlp":
        return mlp(info.input_shape, info.num_classes, list(cfg.hidden))
    if cfg.name == "cnn1d":
        if len(info.input_shape) not in (1, 2):
            raise ConfigError(
                "model.name='cnn1d' needs 1-D inputs (length,) or (channels, length); the "
                f"dataset gives shape {info.input_shape}"
            )
        return Conv1dNet(info.input_shape, info.num_classes, cfg.channels)
    if cfg.name == "cnn_mnist":
        return McMahanCNN(_image_shape(cfg, info, min_side=4), info.num_classes)
    if cfg.name == "resnet_cifar":
        channels, _, _ = _image_shape(cfg, info, min_side=4)
        return ResNetCifar(channels, info.num_classes, resnet_width(cfg))
    raise ConfigError(f"unknown model model.name={cfg.name!r}")
