"""Every configured Flower strategy aggregates what the collector hands it."""

from __future__ import annotations

import contextlib
from typing import get_args

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedsys.codec import UpdatePolicy, encode_update
from fedsys.config import ExperimentConfig, build_config
from fedsys.crypto import RoundBinding
from fedsys.server.collect import RoundCollector
from fedsys.server.strategies import build_strategy
from fedsys.strategy_traits import STRATEGY_TRAITS, StrategyName, traits_of

pytestmark = pytest.mark.usefixtures("task_identity")

GLOBAL = {"w": np.ones((4, 3), np.float32), "b": np.zeros(3, np.float32)}
SHIFTS = [0.1, 0.2, 0.3, 0.4, 5.0]  # the last client is an outlier


def _reply(node: int, shift: float) -> Message:
    delta = {k: torch.full(v.shape, shift) for k, v in GLOBAL.items()}
    payload = encode_update(delta, [], num_examples=10).payload
    content = RecordDict(
        {
            "update": ConfigRecord({"payload": payload}),
            "metrics": MetricRecord({"num-examples": 10, "train_loss": shift}),
        }
    )
    instruction = Message(content=RecordDict(), dst_node_id=node, message_type="train")
    return Message(content=content, reply_to=instruction)


def _aggregate(cfg: ExperimentConfig) -> dict[str, np.ndarray]:
    strategy = build_strategy(cfg.strategy, cfg.train, num_clients=len(SHIFTS))
    # Stateful strategies (FedOpt, FedAvgM, DP) remember the current model in configure_train.
    arrays = ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})
    with contextlib.suppress(_Sampled):
        strategy.configure_train(1, arrays, ConfigRecord(), _NoGrid())  # type: ignore[arg-type]
    collector = RoundCollector(
        GLOBAL,
        UpdatePolicy(require_envelope=False),
        binding=lambda n: RoundBinding(1, 1, n),
        keys=None,
        client_ids={},
        keep_stragglers=True,
        streaming=traits_of(cfg.strategy.name, dp=cfg.strategy.dp is not None).streaming,
    )
    for node, shift in enumerate(SHIFTS, start=1):
        collector.offer(_reply(node, shift))
    result = collector.finish(lambda n: (0, n))
    assert result.accepted == len(SHIFTS)
    agg, _ = strategy.aggregate_train(1, result.for_strategy)
    assert agg is not None
    return {k: v.numpy() for k, v in agg.items()}


class _Sampled(Exception):
    pass


class _NoGrid:
    """Stops configure_train at node sampling: only its side effects on state matter here."""

    def get_node_ids(self) -> list[int]:
        raise _Sampled


@pytest.mark.parametrize(
    ("name", "extra", "expected_shift"),
    [
        ("fedavg", [], float(np.mean(SHIFTS))),
        ("fedprox", ["strategy.proximal_mu=0.1"], float(np.mean(SHIFTS))),
        ("fedmedian", [], 0.3),
        ("fedtrimmedavg", ["strategy.trim_beta=0.2"], 0.3),
        ("krum", ["strategy.num_malicious_nodes=1"], None),
        ("multikrum", ["strategy.num_malicious_nodes=1", "strategy.num_nodes_to_select=3"], None),
        ("bulyan", [], None),  # Bulyan needs n >= 4f + 3: with 5 clients, f = 0
        ("fedavgm", ["strategy.server_momentum=0.0", "strategy.server_lr=1.0"], None),
        ("fedadam", [], None),
        ("fedyogi", [], None),
        ("fedadagrad", [], None),
    ],
)
def test_strategy_sees_weights_built_from_deltas(
    name: str, extra: list[str], expected_shift: float | None
) -> None:
    cfg = build_config({}, [f"strategy.name={name}", "data.num_partitions=5", *extra])
    out = _aggregate(cfg)
    moved = out["w"] - GLOBAL["w"]
    assert np.isfinite(moved).all() and float(np.abs(moved).max()) > 0
    if expected_shift is not None:
        np.testing.assert_allclose(moved, expected_shift, atol=1e-5)
    if name in ("krum", "multikrum", "fedmedian", "fedtrimmedavg"):
        assert float(moved.max()) < 1.0  # the outlier (+5.0) did not drag the model


def test_dp_wrapper_clips_and_noises_individual_updates() -> None:
    cfg = build_config(
        {},
        [
            "data.num_partitions=5",
            "strategy.dp.kind=fixed",
            "strategy.dp.clipping_norm=0.01",
            "strategy.dp.noise_multiplier=0.0",
        ],
    )
    moved = _aggregate(cfg)["w"] - GLOBAL["w"]
    # each update's whole-model norm is clipped to 0.01, so the mean cannot move far
    assert float(np.linalg.norm(moved)) <= 0.01 + 1e-6


@pytest.mark.parametrize(
    ("name", "dp"),
    [(n, False) for n in STRATEGY_TRAITS]
    + [(n, True) for n, t in STRATEGY_TRAITS.items() if t.dp_compatible],
)
def test_keeps_reference_matches_flower(name: StrategyName, dp: bool) -> None:
    """The round sends a coded model without the fp32 record unless the strategy keeps it."""
    overrides = [f"strategy.name={name}", "data.num_partitions=5", "strategy.proximal_mu=0.1"]
    if dp:
        overrides.append("strategy.dp.kind=fixed")
    cfg = build_config({}, overrides)
    strategy = build_strategy(cfg.strategy, cfg.train, num_clients=5)
    assert hasattr(strategy, "current_arrays") == traits_of(name, dp=dp).keeps_reference


def test_the_table_names_every_configurable_strategy() -> None:
    assert set(STRATEGY_TRAITS) == set(get_args(StrategyName))


@pytest.mark.parametrize("name", [n for n, t in STRATEGY_TRAITS.items() if t.mean_is_final])
def test_mean_is_final_strategies_return_the_streamed_mean(name: StrategyName) -> None:
    """What lets the round take the collector's mean without calling aggregate_train."""
    cfg = build_config({}, [f"strategy.name={name}", "strategy.proximal_mu=0.1"])
    strategy = build_strategy(cfg.strategy, cfg.train, num_clients=len(SHIFTS))
    collector = RoundCollector(
        GLOBAL,
        UpdatePolicy(require_envelope=False),
        binding=lambda n: RoundBinding(1, 1, n),
        keys=None,
        client_ids={},
        keep_stragglers=True,
        streaming=STRATEGY_TRAITS[name].streaming,
    )
    for node, shift in enumerate(SHIFTS, start=1):
        collector.offer(_reply(node, shift))
    result = collector.finish(lambda n: (0, n))
    agg, _ = strategy.aggregate_train(1, result.for_strategy)
    assert agg is not None and result.mean_weights is not None
    for key, value in agg.items():
        np.testing.assert_allclose(result.mean_weights[key], value.numpy(), rtol=0, atol=1e-7)
