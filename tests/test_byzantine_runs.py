"""Whole federations with Byzantine clients (the ``attack`` section) through fedsys's real
round loop and ClientApp, in one process (``fedsys.inprocess``): whatever they send, the run
finishes, writes its outputs, and its model stays finite."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedsys.client.attack import malicious_partitions
from fedsys.config import build_config
from fedsys.inprocess import run_in_process
from fedsys.server.records import RunSummary, read_rounds

SMALL = [
    "data.num_partitions=5",
    "strategy.min_available_nodes=5",
    "model.channels=8",
    "train.rounds=2",
    "train.batch_size=64",
    "publish.mode=never",
    "serve.enabled=false",
    "runtime.progress=false",
    "runtime.seed=4",
]


def _run(tmp_path: Path, overrides: list[str], resume: bool = False) -> RunSummary:
    cfg = build_config({}, [*SMALL, *overrides])
    return run_in_process(cfg, tmp_path / "run", resume=resume)


def _model(tmp_path: Path) -> dict[str, np.ndarray]:
    return load_file(tmp_path / "run" / "model.safetensors")


@pytest.mark.parametrize(
    ("strategy", "behaviour", "encrypt"),
    [
        ("fedadam", "nan_weight", False),  # crashed the ServerApp in collect.finish
        ("fedavg", "huge_weight", True),
        ("fedavg", "overflow", True),  # a finite int8 scale that overflows once decoded
        ("fedprox", "inf", False),
        ("fedmedian", "bomb", True),
        ("krum", "wrong_shape", False),
    ],
)
def test_a_malicious_client_is_rejected_and_the_run_finishes(
    tmp_path: Path, strategy: str, behaviour: str, encrypt: bool
) -> None:
    extra = ["strategy.proximal_mu=0.1"] if strategy == "fedprox" else []
    summary = _run(
        tmp_path,
        [
            f"strategy.name={strategy}",
            f"attack.behaviour={behaviour}",
            "attack.fraction=0.2",
            f"codec.encrypt={str(encrypt).lower()}",
            "codec.quantize=int8",
            *extra,
        ],
    )
    rounds = read_rounds(tmp_path / "run" / "metrics.jsonl")
    assert [r.round for r in rounds] == [1, 2] and summary.rounds == 2
    assert all(len(r.rejected) == 1 and r.clients == 4 for r in rounds)
    assert all(np.isfinite(v).all() for v in _model(tmp_path).values())
    assert math.isfinite(summary.final_loss)
    assert (tmp_path / "run" / "summary.json").exists()


def test_the_norm_bound_stops_a_scaled_update_that_fedavg_would_take(tmp_path: Path) -> None:
    attack = ["attack.behaviour=scale", "attack.fraction=0.2", "attack.factor=50"]
    bounded = _run(tmp_path / "bounded", attack)
    open_run = _run(tmp_path / "open", [*attack, "defense.norm_bound=none"])
    honest = _run(tmp_path / "honest", [])
    bounded_rounds = read_rounds(tmp_path / "bounded" / "run" / "metrics.jsonl")
    assert all(
        len(r.rejected) == 1 and "defense.norm_bound" in r.rejected[0].reason
        for r in bounded_rounds
    )
    assert not any(r.rejected for r in read_rounds(tmp_path / "open" / "run" / "metrics.jsonl"))
    assert (
        abs(bounded.final_accuracy - honest.final_accuracy)
        < abs(open_run.final_accuracy - honest.final_accuracy)
        or open_run.final_accuracy < bounded.final_accuracy
    )


def test_an_attack_section_changes_nothing_unless_it_names_someone(tmp_path: Path) -> None:
    _run(tmp_path / "plain", [])
    _run(tmp_path / "zero", ["attack.behaviour=scale", "attack.fraction=0.0"])
    plain, zero = _model(tmp_path / "plain"), _model(tmp_path / "zero")
    for name, value in plain.items():
        np.testing.assert_array_equal(value, zero[name])
    assert malicious_partitions(4, 5, 0.2) == malicious_partitions(4, 5, 0.2)
    assert len(malicious_partitions(4, 20, 0.3)) == 6


def test_a_deployed_node_never_attacks() -> None:
    from flwr.app import Context, RecordDict

    from fedsys.client.attack import attack_for

    cfg = build_config({}, [*SMALL, "attack.behaviour=scale", "attack.fraction=1.0"])
    sim = Context(1, 1, {"partition-id": 0}, RecordDict(), {})
    deployed = Context(1, 1, {"partition-id": 0, "client-id": "edge-1"}, RecordDict(), {})
    assert attack_for(cfg, sim, 0, 1) is not None
    assert attack_for(cfg, deployed, 0, 1) is None
