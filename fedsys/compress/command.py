"""``fedsys compress``: build, measure and sign the variants of any registry version."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedsys.errors import ConfigError, FedsysError

if TYPE_CHECKING:
    from fedsys.compress.lm.job import LMCompressOutcome

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True, highlight=False)

COMPRESS_HELP = (
    "Build the compressed variants (compress.variants) of a registry version, tune them on "
    "the public split of the experiment's data, measure them on its test split, and sign "
    "those within compress.accuracy_budget into the version, where the endpoint serves them "
    "(predict ?variant=NAME). A language-model version (int8 weight-only and lowrank of its "
    "merged model) is judged by perplexity on the config's held-out text against "
    "compress.perplexity_budget and served by /v1/completions?variant=NAME.\n\n"
    "Exit codes: 0 done (refused variants are listed, not errors), 1 it failed, 2 a usage "
    "or config error."
)


def compress_cmd(
    registry: Annotated[Path, typer.Option("--registry", help="Registry directory.")],
    name: Annotated[str, typer.Option("--name", help="Model name in the registry.")],
    version: Annotated[
        int | None, typer.Option("--version", help="Version (default: the active one).")
    ] = None,
    signing_key: Annotated[
        Path | None,
        typer.Option(
            help="The registry publisher's Ed25519 private key (PEM); default "
            "publish.signing_key of the config."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Experiment YAML (data and compress sections)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", "-s", help="Dotted override, e.g. --set compress.prune_fraction=0.3."
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite variants the version already has.")
    ] = False,
) -> None:
    """Build, measure and sign the compressed variants of one registry version."""
    from fedsys.compress.job import compress_version
    from fedsys.compress.lm.job import LMCompressOutcome
    from fedsys.config import load_config
    from fedsys.crypto.keys import load_signing_public_key, public_to_raw, read_signing_key
    from fedsys.registry.store import Registry

    try:
        cfg = load_config(config, [*(set_ or []), "compress.enabled=true"])
        key_path = signing_key or cfg.publish.signing_key
        if key_path is None:
            raise ConfigError("give --signing-key (or publish.signing_key in the config)")
        key = read_signing_key(key_path)
        reg = Registry(registry)
        trusted = load_signing_public_key(reg.publisher_key_path)
        if public_to_raw(trusted) != public_to_raw(key.public_key()):
            raise ConfigError(
                f"--signing-key {key_path} is not the key {reg.publisher_key_path} trusts"
            )
    except FedsysError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    err.print(f"compressing {name} in {registry}: {', '.join(cfg.compress.variants)}")
    try:
        outcome = compress_version(reg, name, version, cfg, key, replace=replace)
    except FedsysError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    if isinstance(outcome, LMCompressOutcome):
        out.print(lm_table(outcome))
        return
    fp32 = outcome.report.fp32
    table = Table(title=f"{name} v{outcome.version} (test split, this CPU)")
    for column in ("variant", "bytes", "x fp32", "accuracy", "p50 ms (1 row)", "rows/s (32)"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    table.add_column("status")
    rows = [
        ("fp32", fp32, None),
        *((v.name, v.metrics, v.refused) for v in outcome.report.variants),
    ]
    for label, m, refused in rows:
        table.add_row(
            label,
            f"{m.bytes:,}",
            f"{m.bytes / fp32.bytes:.3f}",
            f"{m.accuracy:.4f}",
            f"{m.latency_p50_ms:.3f}",
            f"{m.throughput_per_s:,.0f}",
            "published" if label == "fp32" or refused is None else f"refused: {refused}",
        )
    out.print(table)


def lm_table(outcome: LMCompressOutcome) -> Table:
    """A language model's variants beside the merged fp32 model (held-out text, this CPU)."""
    report = outcome.report
    fp32 = report.fp32
    table = Table(title=f"{outcome.name} v{outcome.version} (held-out text, this CPU)")
    columns = ("variant", "bytes", "x fp32", "perplexity", "ms/token (1)", "tokens/s (batch)")
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    table.add_column("status")
    rows = [("fp32", fp32, None), *((v.name, v.metrics, v.refused) for v in report.variants)]
    for label, m, refused in rows:
        table.add_row(
            label,
            f"{m.bytes:,}",
            f"{m.bytes / fp32.bytes:.3f}",
            f"{m.perplexity:.3f}",
            f"{m.latency_p50_ms:.2f}",
            f"{m.throughput_per_s:,.0f}",
            "published" if label == "fp32" or refused is None else f"refused: {refused}",
        )
    for name, why in report.skipped:
        table.add_row(name, "", "", "", "", "", f"not built: {why}")
    return table
