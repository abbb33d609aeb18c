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
from fedsys.data import client_partition, client_test_partition, dataset_info, load_test
from fedsys.data.types import ArrayDataset, DatasetInfo
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
        return dataset_info(self.cfg.data, self.seed)

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
        own_test = (
            client_test_partition(self.cfg.data, self.seed, partition_id)
            if self.cfg.federated_eval.enabled
            else None
        )
        return self._split(part.x, part.y, partition_id, own_test)

    def node_data(self, path: str) -> ClientData:
        from fedsys.client.node_data import read_node_data

        x, y = read_node_data(Path(path))
        return self._split(x, y, 0, None)

    def _split(
        self, x: np.ndarray, y: np.ndarray, partition_id: int, own_test: ArrayDataset | None
    ) -> ClientData:
        """Training and held-out data of one client.

        Without federated evaluation a client trains (and, if asked, evaluates) on everything
        it holds. With it, the held-out data is the client's own test share where the dataset
        has one, else a seeded share of its data that it never trains on
        (``fedsys.client.holdout``).
        """
        xy = (torch.from_numpy(x), torch.from_numpy(y))
        fed = self.cfg.federated_eval
        if not fed.enabled:
            return ClientData(train=xy, held_out=xy, num_examples=len(y))
        if own_test is not None:
            held = (torch.from_numpy(own_test.x), torch.from_numpy(own_test.y))
            return ClientData(train=xy, held_out=held, num_examples=len(y))
        from fedsys.client.holdout import holdout_mask

        mask = torch.from_numpy(holdout_mask(len(y), fed.holdout_fraction, self.seed, partition_id))
        train = (xy[0][~mask], xy[1][~mask])
        return ClientData(
            train=train, held_out=(xy[0][mask], xy[1][mask]), num_examples=len(train[1])
        )

    def central_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        test, _ = load_test(self.cfg.data, self.seed)  # a generated population: test shares only
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
        test, _ = load_test(self.cfg.data, self.seed)
        return {"instances": np.round(test.x[:rows].astype(np.float64), 6).tolist()}

    def summary(self) -> dict[str, Any]:
        return {}
