"""The ``fedsys`` command line."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from fedsys.config import ExperimentConfig, load_config
from fedsys.errors import FedsysError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Experiment YAML.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Dotted override, e.g. --set train.lr=0.05 (repeatable)."),
]


def _setup_logging(level: str) -> None:
    handler = RichHandler(console=err, show_path=False, markup=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("fedsys").setLevel(level)


def _load(config: Path | None, overrides: list[str] | None) -> ExperimentConfig:
    try:
        cfg = load_config(config, overrides)
        # Flower's strategy constructors check their own parameters: build once, up front.
        from fedsys.server.strategies import build_strategy

        build_strategy(cfg.strategy, cfg.train, cfg.data.num_partitions)
        return cfg
    except FedsysError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None


@app.command()
def simulate(
    config: ConfigOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory.")] = None,
    set_: SetOpt = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the killed run in this directory.")
    ] = None,
) -> None:
    """Train with Flower's simulation engine: one virtual client per data partition."""
    if resume is not None:
        if config is not None or out is not None:
            err.print("[red]error:[/red] --resume DIR takes its config and outputs from DIR")
            raise typer.Exit(2)
        saved = resume / "config.yaml"
        if not saved.exists():
            err.print(f"[red]error:[/red] {resume} holds no fedsys run ({saved} is missing)")
            raise typer.Exit(2)
        cfg, out_dir = _load(saved, set_), resume
    else:
        cfg = _load(config, set_)
        out_dir = out or Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        if (out_dir / "checkpoint").exists():
            err.print(
                f"[red]error:[/red] {out_dir} already holds a run; "
                f"continue it with --resume {out_dir} or choose another --out"
            )
            raise typer.Exit(2)
    _setup_logging(cfg.runtime.log_level if cfg.runtime.log_level != "WARNING" else "INFO")
    from fedsys.simulation import simulate as run

    try:
        run(cfg, out_dir, resume=resume is not None)
    except FedsysError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    summary_path = out_dir / "summary.json"
    if not summary_path.exists():
        err.print("[red]error:[/red] the run ended without a summary; see the log above")
        raise typer.Exit(1)
    summary = json.loads(summary_path.read_text())
    err.print(
        f"[bold green]done[/bold green]: final accuracy {summary['final_accuracy']:.4f} after "
        f"{summary['rounds']} rounds, {summary['wall_seconds']:.1f} s; outputs in {out_dir}"
    )


@app.command("check-config")
def check_config(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Validate a config (with overrides) and print it fully resolved, as YAML."""
    import yaml

    cfg = _load(config, set_)
    sys.stdout.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
