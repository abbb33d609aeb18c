"""Run an experiment on Flower's simulation engine (Ray), in this process tree."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fedsys.config import ExperimentConfig
from fedsys.server.progress import stage

if TYPE_CHECKING:
    from fedsys.data import ArrayDataset, DatasetInfo

EXAMPLE_FILE = "example.json"  # a ready predict request: two test samples
EXAMPLE_ROWS = 2


def _quiet_flower(level: str) -> None:
    """Flower logs every message round at INFO; keep the user's terminal for fedsys's table."""
    flwr_level = logging.DEBUG if level == "DEBUG" else logging.ERROR
    logging.getLogger("flwr").setLevel(flwr_level)


def _with_node_state_dir(cfg: ExperimentConfig, info: DatasetInfo) -> ExperimentConfig:
    """Decide once, for every virtual node, where error-feedback residuals go (see
    ``fedsys.client.node_state.simulation_state_dir``); the choice travels in the config."""
    from fedsys.client.node_state import simulation_state_dir
    from fedsys.client.outbound import uses_error_feedback
    from fedsys.models import build_model, count_parameters

    if cfg.runtime.node_state_dir is not None or not uses_error_feedback(cfg.codec):
        return cfg
    from fedsys.client.state_budget import budget_bytes, sampled_per_round

    params = count_parameters(build_model(cfg.model, info))
    per_client = 2 * 4 * params  # two float32 slots
    # What the residuals can take at most: every client's, or the budget's cap on them.
    budget = budget_bytes(cfg.population.state_budget_mb, sampled_per_round(cfg), per_client)
    residual_bytes = min(per_client * cfg.data.num_partitions, budget)
    chosen = simulation_state_dir(None, residual_bytes)
    if chosen is None:
        return cfg
    runtime = cfg.runtime.model_copy(update={"node_state_dir": chosen})
    return cfg.model_copy(update={"runtime": runtime})


def write_example(test: ArrayDataset, out_dir: Path, rows: int = EXAMPLE_ROWS) -> Path:
    """``<out>/example.json``: the first test samples as a predict request body, so the
    endpoint can be tried with ``curl -d @<out>/example.json`` (no input at hand otherwise).
    Six decimals: what a person reads and pastes."""
    import numpy as np

    body = {"instances": np.round(test.x[:rows].astype(np.float64), 6).tolist()}
    path = out_dir / EXAMPLE_FILE
    path.write_text(json.dumps(body) + "\n")
    return path


def simulate(cfg: ExperimentConfig, out_dir: Path, *, resume: bool = False) -> None:
    """Train ``cfg`` with one virtual SuperNode per data partition; outputs go to ``out_dir``."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    if cfg.runtime.ray_address:
        # Flower's Ray backend calls ray.init() without an address, which attaches to the
        # cluster RAY_ADDRESS names (see docs/deployment.md, "Simulation on a Ray cluster").
        os.environ["RAY_ADDRESS"] = cfg.runtime.ray_address
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if not sys.stderr.isatty():  # Ray colours its workers' log prefixes: noise in a file
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if cfg.runtime.log_level != "DEBUG":
        # Read by Flower's logger in every process that imports it, the Ray workers included
        # (they inherit this environment); _quiet_flower only reaches this process.
        os.environ.setdefault("FLWR_LOG_LEVEL", "ERROR")
    stage(
        f"loading Flower, Ray and torch; preparing data ({cfg.data.name}, "
        f"{cfg.data.num_partitions} partitions)"
    )
    # Imported here: Flower and Ray are heavy, and `fedsys --help` should stay instant.
    from flwr.simulation import run_simulation

    from fedsys.client.client_app import app as client_app
    from fedsys.data import load_test
    from fedsys.server.server_app import Launch, make_server_app

    # Fail on missing or unreadable data here, before Ray and the virtual nodes start (the
    # test set only: a generated population's training data is made by its clients).
    test, info = load_test(cfg.data, cfg.runtime.seed)
    cfg = _with_node_state_dir(cfg, info)
    _quiet_flower(cfg.runtime.log_level)
    backend_config = {
        "client_resources": {
            "num_cpus": cfg.runtime.client_cpus,
            "num_gpus": cfg.runtime.client_gpus,
        },
        "init_args": {"logging_level": logging.ERROR, "log_to_driver": True},
    }
    endpoint: contextlib.AbstractContextManager[str | None] = contextlib.nullcontext()
    if cfg.serve.enabled:  # serve the run's registry while it trains (fedsys/serving)
        from fedsys.simulation_endpoint import endpoint_for

        endpoint = endpoint_for(cfg, out_dir)
    with endpoint as url:
        stage(
            f"starting Flower's simulation engine: Ray and {cfg.data.num_partitions} virtual "
            "nodes, whose workers import torch before they answer (about 20 s on two busy "
            "cores)"
        )
        run_simulation(
            server_app=make_server_app(
                Launch(cfg=cfg, out_dir=out_dir, resume=resume, simulation=True)
            ),
            client_app=client_app,
            num_supernodes=cfg.data.num_partitions,
            backend_config=backend_config,  # type: ignore[arg-type]
        )
        if url is not None:
            from fedsys.simulation_endpoint import close_loop

            close_loop(cfg, out_dir, url)
    if (out_dir / "summary.json").exists():
        write_example(test, out_dir)
