"""Central evaluation: the global model on the held-out test set, after every round."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedsys.training import EvalResult, evaluate


def state_dict(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Torch tensors holding copies of ``arrays`` (the model's weights as the round keeps them)."""
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in arrays.items()}


@dataclass(frozen=True)
class Evaluator:
    """The model (reused as a container for each round's weights) and the test set."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    batch_size: int
    device: torch.device

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> EvalResult:
        """Loss and accuracy of the weights ``arrays`` on the test set."""
        self.model.load_state_dict(state_dict(arrays))
        return evaluate(self.model, self.x, self.y, batch_size=self.batch_size, device=self.device)
