"""Whole small federations through the real round loop and ClientApp, in one process
(``fedsys.inprocess``): results do not depend on node ids or registration order, encryption
never refuses an honest update for a key it has not seen, FedBuff runs and resumes, and
federated evaluation fills its columns from each client's own data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from fedsys.config import build_config
from fedsys.inprocess import run_in_process
from fedsys.server.records import RunSummary, read_rounds

SMALL = [
    "data.num_partitions=12",
    "strategy.fraction_train=0.25",
    "strategy.min_train_nodes=3",
    "strategy.min_available_nodes=3",
    "model.channels=4",
    "train.rounds=3",
    "train.batch_size=64",
    "train.max_steps=3",
    "publish.mode=never",
    "runtime.progress=false",
    "runtime.seed=5",
    "defense.direction_check=false",
]


def _run(
    out: Path, overrides: list[str], *, node_ids: list[int] | None = None, resume: bool = False
) -> RunSummary:
    # each run keeps its clients' residuals apart (what `fedsys simulate` does per run id)
    state = f"runtime.node_state_dir={out.parent / (out.name + '-node-state')}"
    cfg = build_config({}, [*SMALL, state, *overrides])
    return run_in_process(cfg, out, node_ids=node_ids, resume=resume, simulation=True)


def _model(out: Path) -> dict[str, np.ndarray]:
    return load_file(out / "model.safetensors")


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_same_seed_same_model_whatever_the_node_ids_and_their_order(tmp_path: Path) -> None:
    """Flower gives nodes random ids and registers them in any order: the virtual clients,
    sampled by stable key, are the same, so the final model is bit-identical."""
    rng = np.random.default_rng(0)
    ids_a = [int(x) for x in rng.choice(2**40, 12, replace=False)]
    ids_b = [int(x) for x in rng.permutation(rng.choice(2**40, 12, replace=False))]
    _run(tmp_path / "a", ["codec.encrypt=true"], node_ids=ids_a)
    _run(tmp_path / "b", ["codec.encrypt=true"], node_ids=ids_b)
    _same(_model(tmp_path / "a"), _model(tmp_path / "b"))
    for out in ("a", "b"):
        rounds = read_rounds(tmp_path / out / "metrics.jsonl")
        # with encryption on, no honest update is refused for a key the server lacked
        assert all(r.rejected == [] and r.clients == r.sampled for r in rounds)


def test_a_pool_of_nodes_plays_the_clients_with_the_same_result(tmp_path: Path) -> None:
    """12 clients on 4 Flower nodes (each message on whichever node is free, so a client
    moves between nodes, and 6 evaluations queue for 4 nodes): the same model and federated
    evaluation as one node per client, every update accepted with encryption and error
    feedback on (the client's key and residual follow it)."""
    run = [
        "codec.encrypt=true",
        "codec.quantize=int8",
        "train.rounds=2",
        "federated_eval.evaluate_every=2",
        "federated_eval.fraction_evaluate=0.5",
    ]
    _run(tmp_path / "one-each", run)
    _run(tmp_path / "pooled", [*run, "runtime.simulated_nodes=4"])
    _same(_model(tmp_path / "one-each"), _model(tmp_path / "pooled"))
    one_each = read_rounds(tmp_path / "one-each" / "metrics.jsonl")
    rounds = read_rounds(tmp_path / "pooled" / "metrics.jsonl")
    assert all(r.rejected == [] and r.clients == r.sampled == 3 for r in rounds)
    assert rounds[-1].federated_clients == 6
    assert rounds[-1].federated_accuracy == one_each[-1].federated_accuracy


def test_fedbuff_on_a_pool_of_nodes(tmp_path: Path) -> None:
    pooled = [
        "fedbuff.enabled=true",
        "fedbuff.concurrency=3",
        "fedbuff.buffer_size=2",
        "codec.encrypt=true",
        "train.rounds=2",
    ]
    _run(tmp_path / "one-each", pooled)
    _run(tmp_path / "pooled", [*pooled, "runtime.simulated_nodes=3"])
    _same(_model(tmp_path / "one-each"), _model(tmp_path / "pooled"))
    rounds = read_rounds(tmp_path / "pooled" / "metrics.jsonl")
    assert all(r.clients == 2 and r.rejected == [] for r in rounds)


def test_fedbuff_runs_and_resumes(tmp_path: Path) -> None:
    fedbuff = [
        "fedbuff.enabled=true",
        "fedbuff.concurrency=4",
        "fedbuff.buffer_size=2",
        "population.speed.distribution=two_point",
        "population.speed.slow_fraction=0.3",
        "codec.encrypt=true",  # sealed updates, keys learned from first replies
        "codec.quantize=int8",  # with error feedback kept per client
        "train.rounds=4",
    ]
    full = _run(tmp_path / "full", fedbuff)
    rounds = read_rounds(tmp_path / "full" / "metrics.jsonl")
    assert [r.round for r in rounds] == [1, 2, 3, 4] and full.rounds == 4
    assert all(r.clients == 2 and r.rejected == [] for r in rounds)
    assert rounds[-1].virtual_seconds is not None and rounds[-1].virtual_seconds > 0
    assert any((r.staleness_max or 0) > 0 for r in rounds)  # slots refill while others train
    # the same seed, the same asynchronous run
    _run(tmp_path / "again", fedbuff)
    _same(_model(tmp_path / "full"), _model(tmp_path / "again"))
    # stop after 2 versions, then resume to 4: continues from the checkpointed version
    _run(tmp_path / "cut", [*fedbuff[:-1], "train.rounds=2"])
    resumed = _run(tmp_path / "cut", fedbuff, resume=True)
    assert resumed.resumed_from_round == 2 and resumed.rounds == 4
    cut = read_rounds(tmp_path / "cut" / "metrics.jsonl")
    assert [r.round for r in cut] == [1, 2, 3, 4]
    assert cut[1].virtual_seconds == rounds[1].virtual_seconds  # identical up to the cut


def test_federated_evaluation_columns(tmp_path: Path) -> None:
    summary = _run(
        tmp_path / "fe",
        [
            "federated_eval.evaluate_every=2",
            "federated_eval.fraction_evaluate=0.5",
            "train.rounds=2",
        ],
    )
    assert summary.rounds == 2
    rounds = read_rounds(tmp_path / "fe" / "metrics.jsonl")
    assert rounds[0].federated_accuracy is None  # not due in round 1
    last = rounds[1]
    assert last.federated_clients == 6
    assert last.federated_worst_accuracy is not None and last.federated_p10_accuracy is not None
    assert last.federated_accuracy is not None
    assert last.federated_worst_accuracy <= last.federated_p10_accuracy <= 1.0
    assert last.federated_worst_accuracy >= 0.0
