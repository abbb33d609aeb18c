"""Run an experiment on Flower's simulation engine (Ray), in this process tree."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from fedsys.config import ExperimentConfig


def _quiet_flower(level: str) -> None:
    """Flower logs every message round at INFO; keep the user's terminal for fedsys's table."""
    flwr_level = logging.DEBUG if level == "DEBUG" else logging.ERROR
    logging.getLogger("flwr").setLevel(flwr_level)


def simulate(cfg: ExperimentConfig, out_dir: Path, *, resume: bool = False) -> None:
    """Train ``cfg`` with one virtual SuperNode per data partition; outputs go to ``out_dir``."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    # Imported here: Flower and Ray are heavy, and `fedsys --help` should stay instant.
    from flwr.simulation import run_simulation

    from fedsys.client.app import app as client_app
    from fedsys.data import load_dataset
    from fedsys.server.app import Launch, make_server_app

    # Fail on missing or unreadable data here, before Ray and the virtual nodes start.
    load_dataset(cfg.data, cfg.runtime.seed)
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
        from fedsys.serving.loop_close import endpoint_for

        endpoint = endpoint_for(cfg, out_dir)
    with endpoint as url:
        run_simulation(
            server_app=make_server_app(
                Launch(cfg=cfg, out_dir=out_dir, resume=resume, simulation=True)
            ),
            client_app=client_app,
            num_supernodes=cfg.data.num_partitions,
            backend_config=backend_config,  # type: ignore[arg-type]
        )
        if url is not None:
            from fedsys.serving.loop_close import close_loop

            close_loop(cfg, out_dir, url)
