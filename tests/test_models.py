"""Model registry: shapes, sizes, determinism and refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedsys.config import ModelConfig
from fedsys.data import DatasetInfo
from fedsys.errors import ConfigError
from fedsys.models import build_model, count_parameters

MNIST1D = DatasetInfo(input_shape=(40,), num_classes=10)
SYNTHETIC = DatasetInfo(input_shape=(60,), num_classes=10)
MNIST = DatasetInfo(input_shape=(1, 28, 28), num_classes=10)
CIFAR = DatasetInfo(input_shape=(3, 32, 32), num_classes=10)

CASES = [
    ("logreg", SYNTHETIC),
    ("logreg", MNIST),
    ("mlp", MNIST1D),
    ("mlp", MNIST),
    ("cnn1d", MNIST1D),
    ("cnn_mnist", MNIST),
    ("cnn_mnist", CIFAR),
    ("resnet_cifar", CIFAR),
]


@pytest.mark.parametrize(("name", "info"), CASES)
def test_forward_shape(name: str, info: DatasetInfo) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig.model_validate({"name": name}), info)
    x = torch.randn(3, *info.input_shape)
    logits = model(x)
    assert logits.shape == (3, info.num_classes)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(("name", "info"), CASES)
def test_initialisation_is_deterministic_under_manual_seed(name: str, info: DatasetInfo) -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return build_model(ModelConfig.model_validate({"name": name}), info).state_dict()

    first, second, other = weights(7), weights(7), weights(8)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


def test_cnn_mnist_has_the_papers_parameter_count() -> None:
    model = build_model(ModelConfig(name="cnn_mnist"), MNIST)
    assert count_parameters(model) == 1_663_370


def test_small_models_parameter_counts() -> None:
    assert count_parameters(build_model(ModelConfig(name="logreg"), SYNTHETIC)) == 60 * 10 + 10
    mlp = build_model(ModelConfig(name="mlp", hidden=[16, 8]), MNIST1D)
    widths = [m.out_features for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert widths == [16, 8, 10]
    assert count_parameters(mlp) == (40 * 16 + 16) + (16 * 8 + 8) + (8 * 10 + 10)


def test_cnn1d_layout() -> None:
    model = build_model(ModelConfig(name="cnn1d", channels=8), MNIST1D)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.padding) for c in convs] == [
        (1, 8, (5,), (2,)),
        (8, 8, (5,), (2,)),
        (8, 8, (5,), (2,)),
    ]
    two_d = build_model(ModelConfig(name="cnn1d"), DatasetInfo((2, 40), 10))
    assert two_d(torch.randn(4, 2, 40)).shape == (4, 10)


def test_resnet_width_is_half_the_channels() -> None:
    def first_width(channels: int) -> int:
        model = build_model(ModelConfig(name="resnet_cifar", channels=channels), CIFAR)
        first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        return first.out_channels

    assert first_width(32) == 16
    assert first_width(8) == 4
    model = build_model(ModelConfig(name="resnet_cifar"), CIFAR)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert count_parameters(model) < 100_000


@pytest.mark.parametrize(
    ("name", "info"),
    [("cnn_mnist", MNIST1D), ("resnet_cifar", SYNTHETIC), ("cnn1d", CIFAR)],
)
def test_incompatible_input_shape_is_a_config_error(name: str, info: DatasetInfo) -> None:
    with pytest.raises(ConfigError, match=name):
        build_model(ModelConfig.model_validate({"name": name}), info)


def test_unknown_name_is_a_config_error() -> None:
    bogus = ModelConfig.model_construct(name="transformer")  # bypasses validation
    with pytest.raises(ConfigError, match="transformer"):
        build_model(bogus, MNIST1D)
