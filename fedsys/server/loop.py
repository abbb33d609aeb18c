"""The ServerApp's round loop: set up, meet the nodes, play the rounds, write the outputs.

It follows ``flwr.serverapp.strategy.Strategy.start`` and calls the same strategy methods
(``configure_train`` / ``aggregate_train``, see ``fedsys.server.round``), adding what that
loop lacks: deltas turned back into weights, per-update validation, central evaluation,
atomic checkpoints, resume, publishing and the run's outputs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from flwr.serverapp import Grid

from fedsys.config import ExperimentConfig
from fedsys.crypto import AggregatorKeys
from fedsys.server.aggregate import Aggregated
from fedsys.server.client_eval import evaluate_clients
from fedsys.server.fedbuff_loop import train_fedbuff
from fedsys.server.federation import Federation, prepare_federation
from fedsys.server.outputs import begin_outputs, write_final_outputs
from fedsys.server.overlap import Overlap
from fedsys.server.peers import meet
from fedsys.server.progress import Reporter
from fedsys.server.records import RunSummary
from fedsys.server.resume import resume_federation
from fedsys.server.round import complete_round, play_round


def run_federation(
    grid: Grid,
    cfg: ExperimentConfig,
    out_dir: Path,
    reporter: Reporter,
    *,
    resume: bool,
    deployed_keys: AggregatorKeys | None = None,
    simulation: bool = False,
    roster: Mapping[int, str] | None = None,
) -> RunSummary:
    """Run (or, with ``resume``, continue) the experiment over ``grid``.

    ``deployed_keys``: the aggregator's key and allow-list loaded from files (deployment).
    ``simulation``: the nodes are virtual; the server assigns each its client (stable key)
    instead of asking every node who it is (``fedsys.server.identities``).
    ``roster``: deployed nodes' client ids by node id, known from their key registration.
    """
    fed = prepare_federation(grid, cfg, out_dir, reporter, deployed_keys)
    if resume:
        resume_federation(fed)
    return train(fed, simulation=simulation, roster=roster)


def task_summary(fed: Federation) -> dict[str, object]:
    """The task's own summary keys and, where it asks for them, every client's held-out
    scores under the final model (``client_eval``: per client, the mean and the worst)."""
    extra = fed.task.summary()
    if fed.task.evaluates_clients:
        fed.reporter.stage("scoring the final model on every client's held-out data")
        scores = evaluate_clients(fed.grid, fed.cfg, fed.state.model, fed.cfg.train.timeout)
        extra["client_eval"] = scores.model_dump(mode="json")
    return extra


def train(
    fed: Federation, *, simulation: bool = False, roster: Mapping[int, str] | None = None
) -> RunSummary:
    """Every round left (or, with ``fedbuff.enabled``, every server version), then the final
    model, curves and summary."""
    cfg, state = fed.cfg, fed.state
    state.started = time.perf_counter()
    begin_outputs(fed.paths, cfg, fresh=state.resumed_from is None and state.round == 0)
    peers = meet(
        fed.grid,
        cfg,
        fed.reporter,
        fed.exchange_key,
        fed.deployed_keys,
        simulation=simulation,
        roster=roster,
    )
    fed.reporter.start(cfg.train.rounds, state.round)
    overlap: Overlap[Aggregated] = Overlap(
        partial(complete_round, fed, peers),
        enabled=cfg.train.eval_overlap,
        last_round=cfg.train.rounds,
    )
    try:
        if cfg.fedbuff.enabled:
            train_fedbuff(fed, peers)
        while state.round < cfg.train.rounds:
            play_round(fed, peers, overlap, state.round + 1)
    finally:
        try:
            overlap.close()  # a round that failed after the previous one aggregated: keep that
        finally:
            fed.reporter.stop()
            fed.checkpointer.close()
            if fed.publisher is not None:
                fed.publisher.close()  # flushes queued versions and uploads
    return write_final_outputs(
        fed.paths,
        cfg,
        state.model,
        fed.task,
        task_summary(fed),
        last_round=state.round,
        wall_seconds=state.wall_seconds(),
        model_parameters=fed.model_parameters,
        resumed_from=state.resumed_from,
        published_version=fed.publisher.last_published if fed.publisher else None,
    )
