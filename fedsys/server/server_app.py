"""The fedsys ServerApp: the same round loop for ``fedsys simulate`` and ``flwr run .``."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedsys.client.node_state import drop_run, state_root
from fedsys.config import ExperimentConfig, load_config
from fedsys.crypto import AggregatorKeys, load_allow_list, read_exchange_key
from fedsys.memory import set_freed_memory
from fedsys.node_roster import load_roster
from fedsys.server.loop import run_federation
from fedsys.server.outlock import exclusive_output_dir
from fedsys.server.progress import LogReporter, Reporter, RichReporter


@dataclass(frozen=True)
class Launch:
    """What the CLI decided before Flower started: config, output directory, resume or not."""

    cfg: ExperimentConfig
    out_dir: Path
    resume: bool = False
    simulation: bool = False  # nodes share this machine's disk: drop their run state at the end
    # Deployed (`fedsys server`): the aggregator's X25519 key and the allow-list, from files.
    update_key: Path | None = None
    allow_list: Path | None = None
    # Deployed: node id -> client id, written by `fedsys server` as it registers node keys.
    roster: Path | None = None

    def deployed_keys(self) -> AggregatorKeys | None:
        if self.update_key is None or self.allow_list is None:
            return None
        return AggregatorKeys(read_exchange_key(self.update_key), load_allow_list(self.allow_list))

    def node_roster(self) -> dict[int, str]:
        """Registered nodes' client ids (empty without a roster file)."""
        return load_roster(self.roster).by_node() if self.roster is not None else {}


def launch_from_run_config(run_config: dict[str, object]) -> Launch:
    """Build the Launch for ``flwr run .`` from ``[tool.flwr.app.config]`` (+ --run-config)."""
    config_file = str(run_config.get("config-file", "") or "")
    overrides = [
        s for s in shlex.split(str(run_config.get("overrides", "")).replace(";", " ")) if s
    ]
    cfg = load_config(Path(config_file) if config_file else None, overrides)
    update_key = str(run_config.get("update-key", "") or "")
    allow_list = str(run_config.get("allow-list", "") or "")
    roster = str(run_config.get("roster", "") or "")
    return Launch(
        cfg=cfg,
        out_dir=Path(str(run_config.get("out-dir", "runs/flwr-run"))),
        resume=bool(run_config.get("resume", False)),
        update_key=Path(update_key) if update_key else None,
        allow_list=Path(allow_list) if allow_list else None,
        roster=Path(roster) if roster else None,
    )


def _reporter(cfg: ExperimentConfig) -> Reporter:
    """The live bar where someone watches a terminal; plain lines elsewhere (logs, CI)."""
    return RichReporter() if cfg.runtime.progress and sys.stderr.isatty() else LogReporter()


def make_server_app(launch: Launch | None = None) -> ServerApp:
    """A ServerApp bound to ``launch``, or reading its launch from the run config."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        chosen = launch or launch_from_run_config(dict(context.run_config))
        set_freed_memory(chosen.cfg.runtime.freed_memory_policy)
        try:
            # One ServerApp per output directory, checked before anything is written.
            with exclusive_output_dir(chosen.out_dir, grid.run.run_id):
                run_federation(
                    grid,
                    chosen.cfg,
                    chosen.out_dir,
                    _reporter(chosen.cfg),
                    resume=chosen.resume,
                    deployed_keys=chosen.deployed_keys(),
                    roster=chosen.node_roster(),
                    simulation=chosen.simulation,
                )
        finally:
            if chosen.simulation:
                drop_run(state_root(chosen.cfg.runtime.node_state_dir), grid.run.run_id)

    return app
