"""Central evaluation: the global model on the task's held-out data, after every round."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsys.tasks import Metrics, Task


def state_dict(arrays: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Torch tensors holding copies of ``arrays`` (the model's weights as the round keeps them)."""
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in arrays.items()}


@dataclass(frozen=True)
class Evaluator:
    """The task's model (reused as a container for each round's state) and held-out data."""

    task: Task
    model: nn.Module
    data: Any  # what the task evaluates on (classification: the test set's (x, y))
    device: torch.device

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> Metrics:
        """Loss, accuracy (and the task's other scores) of the state ``arrays``."""
        self.task.load_state(self.model, state_dict(arrays))
        return self.task.evaluate(self.model, self.data, device=self.device)
