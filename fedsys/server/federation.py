"""Everything one run works with, assembled before the first round.

``prepare_federation`` does the set-up that reads or creates things (the data set, the
initial model, the strategy, the aggregator's key, the publisher); ``Federation`` itself is
plain data, so building one does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flwr.serverapp import Grid

from fedsys.codec import UpdatePolicy
from fedsys.config import ExperimentConfig
from fedsys.crypto import AggregatorKeys, generate_exchange_key
from fedsys.registry.publisher import Publisher
from fedsys.server.checkpointer import Checkpointer
from fedsys.server.durable import RoundGate
from fedsys.server.evaluation import Evaluator
from fedsys.server.norm_bound import NormBound
from fedsys.server.outputs import RunPaths, fp32_bytes
from fedsys.server.progress import Reporter
from fedsys.server.run_state import RunState
from fedsys.server.strategies import build_strategy
from fedsys.strategy_traits import StrategyTraits, traits_of
from fedsys.tasks import Task, task_for
from fedsys.training import select_device


@dataclass(frozen=True)
class Federation:
    """One run of the round loop over a Grid: its parts, and its state in ``state``."""

    cfg: ExperimentConfig
    grid: Grid
    paths: RunPaths
    reporter: Reporter
    state: RunState
    traits: StrategyTraits
    evaluator: Evaluator
    policy: UpdatePolicy  # what the server accepts from a client
    # Update encryption: a fresh aggregator key per run, or (deployed) the key and the
    # allow-list from files, so introductions never decide whom the server trusts.
    exchange_key: X25519PrivateKey | None
    deployed_keys: AggregatorKeys | None
    checkpointer: Checkpointer
    publisher: Publisher | None  # publishing to the model registry, on a background thread
    fp32_bytes: int  # the model in fp32: the base of each round's compression ratio
    model_parameters: int
    task: Task  # what is learned: data, model, evaluation, what travels

    @property
    def run_id(self) -> str:
        return str(self.grid.run.run_id)


def prepare_federation(
    grid: Grid,
    cfg: ExperimentConfig,
    out_dir: Path,
    reporter: Reporter,
    deployed_keys: AggregatorKeys | None = None,
) -> Federation:
    """Build the task (its held-out data, its initial state), the strategy and the outputs.

    ``deployed_keys``: the aggregator's key and allow-list loaded from files (deployment).
    """
    paths = RunPaths(out_dir)
    seed = cfg.runtime.seed
    # The task (classification, language model) owns the data, the model and evaluation.
    task = task_for(cfg)
    initial = task.initial_state()
    evaluator = Evaluator(task, task.model(), task.central_data(), select_device(cfg.train.device))
    cfg = task.stamp(cfg)  # what every node must verify it holds (a language model's base)
    state = RunState(
        strategy=build_strategy(cfg.strategy, cfg.train, cfg.data.num_partitions),
        model=initial,
        rng=np.random.default_rng(seed),
        norm_bound=NormBound(cfg.defense),
    )
    exchange_key = None
    if cfg.codec.encrypt:
        exchange_key = deployed_keys.exchange_key if deployed_keys else generate_exchange_key()
    durable = RoundGate()  # rounds whose checkpoint is on disk: publishes wait for it
    publisher = None
    if cfg.publish.mode != "never":
        publisher = Publisher(
            cfg,
            out_dir,
            task.dataset_info(),
            eval_data=task.int8_eval_data(),
            publication=partial(task.publication, merge=cfg.publish.merge),
        )
        publisher.gate = durable
    return Federation(
        cfg=cfg,
        grid=grid,
        paths=paths,
        reporter=reporter,
        state=state,
        traits=traits_of(cfg.strategy.name, dp=cfg.strategy.dp is not None),
        evaluator=evaluator,
        policy=UpdatePolicy(
            max_payload_bytes=cfg.codec.max_update_bytes,
            max_norm=cfg.codec.max_norm,
            require_envelope=cfg.codec.encrypt,
        ),
        exchange_key=exchange_key,
        deployed_keys=deployed_keys,
        checkpointer=Checkpointer(paths.checkpoints, durable),
        publisher=publisher,
        fp32_bytes=fp32_bytes(initial),
        model_parameters=task.model_parameters(),
        task=task,
    )
