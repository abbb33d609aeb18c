"""Classification, the first task: arrays of features and labels, a classifier by name,
cross-entropy and accuracy. It calls the functions the round loop and ClientApp always called,
in the same order, so runs are bit-identical to before the task seam."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsys.config import ExperimentConfig, TrainConfig
from fedsys.data import client_partition, load_dataset
from fedsys.data.types import DatasetInfo
from fedsys.models import build_model, count_parameters
from fedsys.tasks.base import ClientData, Metrics, Publication, State
from fedsys.training import TrainResult, evaluate, train_local


class ClassificationTask:
    """A classifier (``model.name``) on a dataset (``data.name``)."""

    name = "classification"

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.seed = cfg.runtime.seed
        self._model: nn.Module | None = None

    @property
    def label(self) -> str:
        return self.cfg.data.name

    @property
    def info(self) -> DatasetInfo:
        return load_dataset(self.cfg.data, self.seed)[2]

    def model(self) -> nn.Module:
        if self._model is None:
            self._model = build_model(self.cfg.model, self.info)
        return self._model

    def initial_state(self) -> dict[str, np.ndarray]:
        torch.manual_seed(self.seed)
        model = build_model(self.cfg.model, self.info)
        self._model = model
        # copies: the model object is shared with clients served in this process
        return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}

    def state_of(self, model: nn.Module) -> Mapping[str, torch.Tensor]:
        return model.state_dict()

    def load_state(self, model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
        model.load_state_dict(state)

    def local_start(self, state: State, partition_id: int) -> State:
        return state

    def client_data(self, partition_id: int) -> ClientData:
        part = client_partition(self.cfg.data, self.seed, partition_id)
        xy = (torch.from_numpy(part.x), torch.from_numpy(part.y))
        return ClientData(train=xy, held_out=xy, num_examples=len(part))

    def node_data(self, path: str) -> ClientData:
        from fedsys.client.node_data import read_node_data

        x, y = read_node_data(Path(path))
        xy = (torch.from_numpy(x), torch.from_numpy(y))
        return ClientData(train=xy, held_out=xy, num_examples=len(y))

    def central_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        _, test, _ = load_dataset(self.cfg.data, self.seed)
        return torch.from_numpy(test.x), torch.from_numpy(test.y)

    def train(
        self,
        model: nn.Module,
        data: ClientData,
        cfg: TrainConfig,
        *,
        seed: int,
        device: torch.device,
        proximal_mu: float,
        work_fraction: float,
        partition_id: int,
    ) -> TrainResult:
        x, y = data.train
        return train_local(
            model,
            x,
            y,
            cfg,
            seed=seed,
            device=device,
            proximal_mu=proximal_mu,
            work_fraction=work_fraction,
        )

    def evaluate(self, model: nn.Module, data: Any, *, device: torch.device) -> Metrics:
        x, y = data
        res = evaluate(model, x, y, batch_size=self.cfg.train.eval_batch_size, device=device)
        return Metrics(loss=res.loss, accuracy=res.accuracy, num_examples=res.num_examples)

    def model_parameters(self) -> int:
        return count_parameters(self.model())

    def update_parameters(self) -> int:
        return self.model_parameters()

    def stamp(self, cfg: ExperimentConfig) -> ExperimentConfig:
        return cfg

    def check_server(self, cfg: ExperimentConfig) -> None:
        return None

    @property
    def evaluates_clients(self) -> bool:
        return False

    def weights_metadata(self) -> dict[str, str]:
        return {"model": self.cfg.model.model_dump_json()}

    def dataset_info(self) -> DatasetInfo | None:
        return self.info

    def int8_eval_data(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.central_data()

    def publication(self, state: Mapping[str, np.ndarray], merge: bool) -> Publication | None:
        return None  # the publisher's own path: the state is the classifier's whole state_dict

    def example_request(self, rows: int) -> dict[str, Any] | None:
        """The first test samples as a predict body (six decimals: what a person pastes)."""
        _, test, _ = load_dataset(self.cfg.data, self.seed)
        return {"instances": np.round(test.x[:rows].astype(np.float64), 6).tolist()}

    def summary(self) -> dict[str, Any]:
        return {}
