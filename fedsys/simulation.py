"""Run an experiment on Flower's simulation engine (Ray), in this process tree."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from fedsys.config import ExperimentConfig
from fedsys.server.progress import stage

EXAMPLE_FILE = "example.json"  # a ready predict request: two test samples
EXAMPLE_ROWS = 2


def _quiet_flower(level: str) -> None:
    """Flower logs every message round at INFO; keep the user's terminal for fedsys's table."""
    flwr_level = logging.DEBUG if level == "DEBUG" else logging.ERROR
    logging.getLogger("flwr").setLevel(flwr_level)


def _with_node_state_dir(cfg: ExperimentConfig) -> ExperimentConfig:
    """Decide once, for every virtual node, where error-feedback residuals go (see
    ``fedsys.client.node_state.simulation_state_dir``); the choice travels in the config."""
    from fedsys.client.node_state import simulation_state_dir
    from fedsys.client.outbound import uses_error_feedback
    from fedsys.tasks import task_for

    if cfg.runtime.node_state_dir is not None or not uses_error_feedback(cfg.codec):
        return cfg
    from fedsys.client.state_budget import budget_bytes, sampled_per_round

    per_client = 2 * 4 * task_for(cfg).update_parameters()  # two float32 slots of what travels
    # What the residuals can take at most: every client's, or the budget's cap on them.
    budget = budget_bytes(cfg.population.state_budget_mb, sampled_per_round(cfg), per_client)
    residual_bytes = min(per_client * cfg.data.num_partitions, budget)
    chosen = simulation_state_dir(None, residual_bytes)
    if chosen is None:
        return cfg
    runtime = cfg.runtime.model_copy(update={"node_state_dir": chosen})
    return cfg.model_copy(update={"runtime": runtime})


def write_example(body: dict[str, Any] | None, out_dir: Path) -> Path | None:
    """``<out>/example.json``: a ready request body from the task (classification: the first
    test samples), so the endpoint can be tried with ``curl -d @<out>/example.json``."""
    if body is None:
        return None
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
    from fedsys.tasks import task_for

    task = task_for(cfg)
    stage(
        f"loading Flower, Ray and torch; preparing data ({task.label}, "
        f"{cfg.data.num_partitions} partitions)"
    )
    # Imported here: Flower and Ray are heavy, and `fedsys --help` should stay instant.
    from flwr.simulation import run_simulation

    from fedsys.client.client_app import app as client_app
    from fedsys.server.node_pool import simulated_nodes
    from fedsys.server.server_app import Launch, make_server_app

    # Fail on missing or unreadable data here, before Ray and the virtual nodes start (the
    # central data only: a generated population's training data is made by its clients).
    task.central_data()
    cfg = _with_node_state_dir(cfg)
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
            f"starting Flower's simulation engine: Ray and {simulated_nodes(cfg)} virtual "
            "nodes, whose workers import torch before they answer (about 20 s on two busy "
            "cores)"
        )
        run_simulation(
            server_app=make_server_app(
                Launch(cfg=cfg, out_dir=out_dir, resume=resume, simulation=True)
            ),
            client_app=client_app,
            num_supernodes=simulated_nodes(cfg),
            backend_config=backend_config,  # type: ignore[arg-type]
        )
        if url is not None:
            from fedsys.simulation_endpoint import close_loop

            close_loop(cfg, out_dir, url)
    if (out_dir / "summary.json").exists():
        write_example(task.example_request(EXAMPLE_ROWS), out_dir)
