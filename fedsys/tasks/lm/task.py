"""Language modelling, the second task: causal next-token prediction with LoRA adapters.

The frozen base is built or loaded once per process and shared by every virtual client that
process serves; only the adapters (``fedsys.tasks.lm.lora``) are loaded, trained and sent.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsys.config import ExperimentConfig, TrainConfig
from fedsys.data.types import DatasetInfo
from fedsys.errors import ConfigError, FedsysError
from fedsys.tasks.base import ClientData, LanguageModelContent, Metrics, Publication, State
from fedsys.tasks.lm.lora import (
    adapter_parameters,
    attach_lora,
    client_rank,
    load_travelling_state,
    travelling_state,
    truncate_rank,
)
from fedsys.tasks.lm.models import BaseModel, build_named, load_checkpoint, weights_sha256
from fedsys.tasks.lm.split import TextData
from fedsys.tasks.lm.text import central_sample, load_text, node_text
from fedsys.tasks.lm.tokenizer import TextTokenizer
from fedsys.tasks.lm.train import evaluate_lm, train_lm
from fedsys.training import TrainResult

EVAL_BATCH = 32


class BaseMismatch(FedsysError):
    """This node's base weights are not the server's: its adapters would not fit them."""

    def __init__(self, expected: str, found: str, source: str) -> None:
        super().__init__(
            f"base weights differ from the server's: this node's base ({source}) has sha256 "
            f"{found[:16]}..., the server's {expected[:16]}...; give every node the same "
            "lm.base checkpoint"
        )
        self.reason = str(self)


def load_base(cfg: ExperimentConfig, tokenizer: TextTokenizer) -> BaseModel:
    """The base of ``cfg.lm``: its checkpoint, else a seeded model of the named size."""
    lm = cfg.lm
    if lm.base is not None:
        model = load_checkpoint(lm.base.expanduser())
        source = str(lm.base)
    else:
        model = build_named(lm.size, tokenizer.vocab_size, lm.text.seq_len, cfg.runtime.seed)
        source = lm.size
    rows = int(model.get_input_embeddings().weight.shape[0])  # type: ignore[operator]
    if tokenizer.vocab_size > rows:
        raise ConfigError(
            f"the tokenizer has {tokenizer.vocab_size} tokens but the base ({source}) embeds "
            f"only {rows}; use the tokenizer the base was trained with (lm.tokenizer)"
        )
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return BaseModel(model=model, sha256=weights_sha256(model), source=source)


class LanguageModelTask:
    """Next-token prediction on text split by package (or IID), LoRA adapters as the update."""

    name = "language_model"

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.lm = cfg.lm
        self.seed = cfg.runtime.seed
        self.aggregation = cfg.lm.lora.aggregation
        self._lock = threading.RLock()
        self._base: BaseModel | None = None
        self._model: nn.Module | None = None
        self._initial: dict[str, np.ndarray] | None = None

    @property
    def label(self) -> str:
        base = str(self.lm.base) if self.lm.base is not None else self.lm.size
        return f"text: {self.lm.text.source}, base: {base}, LoRA {self.aggregation}"

    # -- text -------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> TextTokenizer:
        return load_text(self.lm, self.cfg.data.num_partitions, self.seed)[0]

    @property
    def text(self) -> TextData:
        return load_text(self.lm, self.cfg.data.num_partitions, self.seed)[1]

    def client_data(self, partition_id: int) -> ClientData:
        clients = self.text.clients
        if not 0 <= partition_id < len(clients):
            raise FedsysError(f"partition {partition_id} is outside 0..{len(clients) - 1}")
        split = clients[partition_id]
        return ClientData(train=split.train, held_out=split.test, num_examples=split.num_examples)

    def node_data(self, path: str) -> ClientData:
        split = node_text(Path(path), self.tokenizer, self.lm.text, self.seed)
        return ClientData(train=split.train, held_out=split.test, num_examples=split.num_examples)

    def central_data(self) -> np.ndarray:
        return central_sample(self.text, self.lm.max_eval_chunks, self.seed)

    # -- model ------------------------------------------------------------------------------
    @property
    def base(self) -> BaseModel:
        with self._lock:
            if self._base is None:
                self._base = load_base(self.cfg, self.tokenizer)
            return self._base

    def check_base(self, expected: str | None) -> None:
        """Refuse to train on a base other than the server's (``lm.base_sha256``)."""
        if expected is not None and expected != self.base.sha256:
            raise BaseMismatch(expected, self.base.sha256, self.base.source)

    def model(self) -> nn.Module:
        """The base with adapters attached: one per process, whatever the number of clients."""
        with self._lock:
            if self._model is None:
                base = self.base  # hashed before adapters are attached
                if self.lm.gradient_checkpointing:
                    base.model.activation_checkpointing_enable(  # type: ignore[operator]
                        activation_checkpointing_kwargs={"use_reentrant": False}
                    )
                self._model = attach_lora(base.model, self.lm.lora, self.seed)
                self._initial = {
                    k: v.numpy() for k, v in travelling_state(self._model, self.aggregation).items()
                }
            return self._model

    def initial_state(self) -> dict[str, np.ndarray]:
        self.model()
        assert self._initial is not None
        return {k: v.copy() for k, v in self._initial.items()}

    def state_of(self, model: nn.Module) -> Mapping[str, torch.Tensor]:
        return {k: p.detach() for k, p in adapter_parameters(model, self.aggregation).items()}

    def load_state(self, model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
        load_travelling_state(model, dict(state), self.aggregation)

    def local_start(self, state: State, partition_id: int) -> State:
        if self.aggregation != "hetlora":
            return state
        return truncate_rank(state, client_rank(self.lm.lora, partition_id))

    # -- training and evaluation ------------------------------------------------------------
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
        return train_lm(
            model,
            data.train,
            cfg,
            seed=seed,
            device=device,
            proximal_mu=proximal_mu,
            work_fraction=work_fraction,
        )

    def evaluate(self, model: nn.Module, data: Any, *, device: torch.device) -> Metrics:
        res = evaluate_lm(
            model, data, batch_size=min(self.cfg.train.eval_batch_size, EVAL_BATCH), device=device
        )
        return Metrics(
            loss=res.loss,
            accuracy=res.accuracy,
            num_examples=res.num_examples,
            extra={"perplexity": res.perplexity, "tokens": float(res.tokens)},
        )

    def model_parameters(self) -> int:
        model = self.base.model
        return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)

    def update_parameters(self) -> int:
        return sum(int(np.prod(v.shape)) for v in self.initial_state().values())

    def stamp(self, cfg: ExperimentConfig) -> ExperimentConfig:
        """The server's base hash in ``lm.base_sha256`` (a configured one must match it)."""
        self.check_server(cfg)
        lm = cfg.lm.model_copy(update={"base_sha256": self.base.sha256})
        return cfg.model_copy(update={"lm": lm})

    def check_server(self, cfg: ExperimentConfig) -> None:
        self.check_base(cfg.lm.base_sha256)

    @property
    def evaluates_clients(self) -> bool:
        return True

    def weights_metadata(self) -> dict[str, str]:
        return {
            "task": self.name,
            "lm": self.lm.model_dump_json(),
            "base_sha256": self.base.sha256,
            "content": "adapter" if self.aggregation != "full" else "model",
        }

    def dataset_info(self) -> DatasetInfo | None:
        return None

    def int8_eval_data(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None

    def publication(self, state: Mapping[str, np.ndarray], merge: bool) -> Publication | None:
        """The adapter over the run's base, or (``merge``, and full fine-tuning) the merged
        model; either names the base the registry stores once (``bases/<address>``)."""
        from fedsys.tasks.lm.publish import (
            adapter_config,
            adapter_tensors,
            base_address,
            base_writer,
            describe,
            merged_model,
        )

        model = self.model()
        base = self.base
        tokenizer = self.tokenizer
        where = (base.sha256, base_address(tokenizer, self.lm, base.sha256))
        write_base = base_writer(
            lambda: load_base(self.cfg, tokenizer), tokenizer, self.lm, base.sha256
        )
        content: LanguageModelContent
        if merge or self.aggregation == "full":
            merged = merged_model(model, state, self.aggregation)
            weights = {k: v.detach().numpy().copy() for k, v in merged.state_dict().items()}
            content = LanguageModelContent("merged", *where, write_base)
            module: nn.Module | None = merged
        else:
            weights = adapter_tensors(model, state, self.aggregation)
            config = adapter_config(model)
            content = LanguageModelContent("adapter", *where, write_base, adapter_config=config)
            module = None
        return Publication(
            weights=weights,
            model=describe(base, self.lm),
            input_shape=(self.lm.text.seq_len,),
            num_classes=self.tokenizer.vocab_size,
            module=module,
            language_model=content,
        )

    def example_request(self, rows: int) -> dict[str, Any] | None:
        return None

    def summary(self) -> dict[str, Any]:
        text = self.text
        return {
            "task": self.name,
            "corpus_sha256": text.corpus_sha256,
            "base_sha256": self.base.sha256,
            "base": self.base.source,
            "tokenizer": self.lm.tokenizer.kind,
            "vocab_size": self.tokenizer.vocab_size,
            "aggregation": self.aggregation,
            "update_parameters": self.update_parameters(),
            "public_units": list(text.public_units),
            "client_units": list(text.client_units),
        }
