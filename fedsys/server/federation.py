"""Everything one run works with, assembled before the first round.

``prepare_federation`` does the set-up that reads or creates things (the data set, the
initial model, the strategy, the aggregator's key, the publisher); ``Federation`` itself is
plain data, so building one does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from flwr.serverapp import Grid

from fedsys.codec import UpdatePolicy
from fedsys.config import ExperimentConfig
from fedsys.crypto import AggregatorKeys, generate_exchange_key
from fedsys.data import load_test
from fedsys.models import build_model, count_parameters
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
    # allow-list from files, so hellos never decide whom the server trusts.
    exchange_key: X25519PrivateKey | None
    deployed_keys: AggregatorKeys | None
    checkpointer: Checkpointer
    publisher: Publisher | None  # publishing to the model registry, on a background thread
    fp32_bytes: int  # the model in fp32: the base of each round's compression ratio
    model_parameters: int

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
    """Load the test set, build the initial model and the strategy, and set up the outputs.

    ``deployed_keys``: the aggregator's key and allow-list loaded from files (deployment).
    """
    paths = RunPaths(out_dir)
    seed = cfg.runtime.seed
    test, info = load_test(cfg.data, seed)  # a generated population's clients make the rest
    test_x, test_y = torch.from_numpy(test.x), torch.from_numpy(test.y)
    torch.manual_seed(seed)
    model = build_model(cfg.model, info)
    evaluator = Evaluator(
        model, test_x, test_y, cfg.train.eval_batch_size, select_device(cfg.train.device)
    )
    initial = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
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
        publisher = Publisher(cfg, out_dir, info, eval_data=(test_x, test_y))
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
        model_parameters=count_parameters(model),
    )
