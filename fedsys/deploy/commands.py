"""The deployment commands of ``fedsys``: ``server``, ``client`` and ``partition``.

Heavy imports (torch, Flower) happen inside the commands, so ``fedsys --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fedsys.errors import FedsysError

err = Console(stderr=True, soft_wrap=True, highlight=False)

SettingsOpt = Annotated[Path, typer.Option("--config", "-c", help="Deployment settings YAML.")]


def _fail(exc: Exception, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(code)


def server_cmd(
    config: SettingsOpt,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Continue from the last checkpoint in out_dir (none: round 1)."
        ),
    ] = False,
    connect: Annotated[
        str | None,
        typer.Option("--connect", help="Use the SuperLink already running at host:port."),
    ] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="No TLS, no node authentication (development).")
    ] = False,
) -> None:
    """Run the aggregation server: a SuperLink (TLS, node auth) and the fedsys run."""
    from fedsys.deploy.server_daemon import run_server
    from fedsys.deploy.settings import ServerSettings, load_settings

    try:
        settings = load_settings(config, ServerSettings)
        updates: dict[str, object] = {}
        if connect:
            updates.update(connect_only=True, address=connect)
        if insecure:
            updates.update(insecure=True, node_auth=False, tls=None)
        if updates:
            settings = ServerSettings.model_validate({**settings.model_dump(), **updates})
        code = run_server(settings, resume=resume)
    except FedsysError as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


def client_cmd(config: SettingsOpt) -> None:
    """Run a client daemon: a supervised SuperNode and the warm trainer."""
    from fedsys.deploy.client_daemon import run_client
    from fedsys.deploy.settings import ClientSettings, load_settings

    try:
        code = run_client(load_settings(config, ClientSettings))
    except (FedsysError, FileNotFoundError) as exc:
        raise _fail(exc) from None
    raise typer.Exit(code)


def partition_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="The .npz file to write.")],
    partition_id: Annotated[int, typer.Option("--partition-id", min=0)],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Experiment YAML.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="Dotted override.")] = None,
) -> None:
    """Write one client's partition of a built-in dataset as a node data file (x, y)."""
    from fedsys.client.node_data import write_partition
    from fedsys.config import load_config

    try:
        n = write_partition(load_config(config, set_), partition_id, out)
    except FedsysError as exc:
        raise _fail(exc) from None
    err.print(f"partition {partition_id}: {n} examples in {out}")
