"""The task seam: what the data is, how a model is built, trained and evaluated, what travels.

The round loop, the ClientApp and the publisher speak only this interface, so a second kind of
learning (language models beside classifiers) is a second implementation, not branches
through them. A task object is built once per process for a config (``fedsys.tasks.task_for``)
and holds that process's data and model: a simulation worker's virtual clients share them.

"State" is what travels between server and clients, as named tensors: a classifier's whole
``state_dict``; a language model's LoRA adapters (or only their B halves, or every weight).
The codec, encryption, secure aggregation, DP wrappers and checkpoints handle it as they
handle any model, because to them it is one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from fedsys.config import ExperimentConfig, TrainConfig
from fedsys.data.types import DatasetInfo
from fedsys.training import TrainResult

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Metrics:
    """An evaluation: ``accuracy`` is the task's headline score (class accuracy, next-token
    accuracy) and ``loss`` its loss; ``extra`` holds the rest (e.g. perplexity)."""

    loss: float
    accuracy: float
    num_examples: int
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class LanguageModelContent:
    """What a language-model version is over its base (the manifest's ``language_model``):
    ``kind`` adapter or merged, the adapter's peft config, and the base the registry stores
    once, under ``bases/<base_address>`` (a sha256 over the weights' ``base_sha256`` and the
    tokenizer), which the version names: ``write_base`` writes its Hugging Face directory
    (config, weights, tokenizer) when the registry does not hold it yet."""

    kind: Literal["adapter", "merged"]
    base_sha256: str
    base_address: str
    write_base: Callable[[Path], None]
    adapter_config: dict[str, Any] | None = None


@dataclass(frozen=True, eq=False)
class Publication:
    """What a registry version of the global state holds and how it is described.

    ``model`` goes into the manifest (how to rebuild the module the weights load into, or a
    language model's provenance); ``module`` is that module with the weights in, for the int8
    copy (None: no copy applies); ``language_model`` is set for a language model, which is
    rebuilt from its base rather than from ``model``.
    """

    weights: dict[str, np.ndarray]
    model: dict[str, Any]
    input_shape: tuple[int, ...]
    num_classes: int
    module: nn.Module | None
    language_model: LanguageModelContent | None = None


@dataclass(frozen=True, eq=False)
class ClientData:
    """A client's data: what it trains on and what it evaluates on (both task-shaped)."""

    train: Any
    held_out: Any
    num_examples: int


class Task(Protocol):
    """One kind of learning problem, end to end."""

    name: str

    @property
    def label(self) -> str:
        """A few words for progress lines: which data (and model) this run uses."""
        ...

    def model(self) -> nn.Module:
        """This process's model object (built once; states are loaded into it)."""
        ...

    def initial_state(self) -> dict[str, np.ndarray]:
        """Round 0's global state (seeded: the same on every node)."""
        ...

    def state_of(self, model: nn.Module) -> Mapping[str, torch.Tensor]:
        """What travels, read from ``model`` (may share memory with it)."""
        ...

    def load_state(self, model: nn.Module, state: Mapping[str, torch.Tensor]) -> None: ...

    def local_start(self, state: State, partition_id: int) -> State:
        """The state a client starts from (and takes its delta against)."""
        ...

    def client_data(self, partition_id: int) -> ClientData: ...

    def node_data(self, path: str) -> ClientData:
        """A deployed node's own data file."""
        ...

    def central_data(self) -> Any:
        """What the server evaluates every round's model on."""
        ...

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
    ) -> TrainResult: ...

    def evaluate(self, model: nn.Module, data: Any, *, device: torch.device) -> Metrics: ...

    def model_parameters(self) -> int:
        """Scalar parameters of the whole model (summary.json)."""
        ...

    def update_parameters(self) -> int:
        """Scalar entries of the travelling state (what one update carries at most)."""
        ...

    def stamp(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """The config as the server sends it: with what every node must verify it holds."""
        ...

    def check_server(self, cfg: ExperimentConfig) -> None:
        """On a node: refuse (a FedsysError with the reason) to work with a server whose
        model this node cannot serve, e.g. a different base."""
        ...

    @property
    def evaluates_clients(self) -> bool:
        """Whether the run ends by scoring the final model on every client's held-out data."""
        ...

    def weights_metadata(self) -> dict[str, str]:
        """What ``model.safetensors`` says about itself (safetensors metadata)."""
        ...

    def dataset_info(self) -> DatasetInfo | None:
        """A classifier's input shape and classes (the registry's manifest), else None."""
        ...

    def int8_eval_data(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Data the int8 copy's accuracy is compared on (classification), else None."""
        ...

    def publication(self, state: Mapping[str, np.ndarray], merge: bool) -> Publication | None:
        """A registry version of ``state``, or None for the publisher's classifier path."""
        ...

    def example_request(self, rows: int) -> dict[str, Any] | None:
        """A ready request body for the endpoint, or None when it answers nothing yet."""
        ...

    def summary(self) -> dict[str, Any]:
        """Identity of the run's data and base for ``summary.json`` (may be empty)."""
        ...
