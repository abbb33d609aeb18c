"""The ``fedsys`` command: simulate, check-config, serve, and the deployment commands."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler

from fedsys.compress.command import COMPRESS_HELP, compress_cmd
from fedsys.config import ExperimentConfig, load_config
from fedsys.deploy.commands import client_cmd, partition_cmd, server_cmd
from fedsys.deploy.keys_cli import certs_cmd, keys_app
from fedsys.errors import FedsysError

if TYPE_CHECKING:
    from fedsys.serving.endpoint_settings import ServeSettings

# Help texts are single paragraphs (rich keeps a docstring's line breaks as they are).
EXIT_CODES = "Exit codes: 0 success, 1 the run failed, 2 a usage or config error."
HELP = (
    "fedsys: federated learning on Flower. Train with simulate, validate a config with "
    "check-config, pre-train a language model's base with pretrain, build compressed variants "
    "of a published model with compress, serve the trained model with serve, and run a real "
    "federation with keys, certs, server, client and partition.\n\n"
    "Results go to stdout; progress and diagnostics to stderr. " + EXIT_CODES
)
SIMULATE_HELP = (
    "Train with Flower's simulation engine: one virtual client per data partition.\n\n"
    "Progress goes to stderr; the final line (accuracy, outputs) to stdout. Exit codes: 0 "
    "the run finished, 1 it failed (data missing, a round failed, no summary), 2 a config "
    "or usage error (nothing was started)."
)
CHECK_HELP = (
    "Validate a config (with overrides) and print it fully resolved, as YAML, on stdout.\n\n"
    "Defaults derived from other fields or from the machine are filled in; the two that only "
    "a run decides (publish.registry, runtime.node_state_dir) stay null with a comment "
    "saying how. Exit codes: 0 valid, 2 invalid (the error names the field)."
)

app = typer.Typer(add_completion=False, no_args_is_help=True, help=HELP)
err = Console(stderr=True, soft_wrap=True)
stdout = Console(soft_wrap=True, highlight=False)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Experiment YAML.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Dotted override, e.g. --set train.lr=0.05 (repeatable)."),
]


def _setup_logging(level: str) -> None:
    """``level`` for fedsys's diagnostics; progress (stages, rounds: ``fedsys.progress``)
    shows at INFO unless the level is ERROR. Rich on a terminal, plain lines elsewhere."""
    handler: logging.Handler
    if err.is_terminal:
        handler = RichHandler(console=err, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
        )
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("fedsys").setLevel(level)
    progress = logging.ERROR if level == "ERROR" else logging.INFO
    logging.getLogger("fedsys.progress").setLevel(progress)
    # transformers imports torchao (the LM int8 variants' library) with every model class;
    # on a CPU-only torch its import warns that its CUDA extensions do not load: no action.
    logging.getLogger("torchao").setLevel(logging.ERROR)


def _version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for dist in ("fedsys", "flwr", "torch"):
        try:
            parts.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            parts.append(f"{dist} (not installed)")
    return f"{parts[0]} ({', '.join(parts[1:])})"


def _print_version(value: bool) -> None:
    if value:
        stdout.print(_version_text())
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print fedsys's version (and Flower's and torch's) and exit.",
        ),
    ] = False,
) -> None:
    """Options of ``fedsys`` itself (the app's help is HELP)."""


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


@app.command(help=SIMULATE_HELP)
def simulate(
    config: ConfigOpt = None,
    out_dir_opt: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output directory.",
            show_default="runs/<name>-<YYYYmmdd-HHMMSS>",
        ),
    ] = None,
    set_: SetOpt = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the killed run in this directory.")
    ] = None,
) -> None:
    """Train with Flower's simulation engine (help: SIMULATE_HELP)."""
    out = out_dir_opt
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
    _setup_logging(cfg.runtime.log_level)
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
    served = summary.get("served_accuracy")
    served_text = f" (served: {served:.4f})" if served is not None else ""
    perplexity = summary.get("final_perplexity")
    if perplexity is not None:
        served_ppl = summary.get("served_perplexity")
        served_text += f", perplexity {perplexity:.4f}" + (
            f" (served: {served_ppl:.4f})" if served_ppl is not None else ""
        )
    stdout.print(
        f"[bold green]done[/bold green]: final accuracy {summary['final_accuracy']:.4f}"
        f"{served_text} after {summary['rounds']} rounds, {summary['wall_seconds']:.1f} s; "
        f"outputs in {out_dir}"
    )


@app.command("check-config", help=CHECK_HELP)
def check_config(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Validate and print the resolved config (help: CHECK_HELP)."""
    from fedsys.resolved import resolved_yaml

    cfg = _load(config, set_)
    sys.stdout.write(resolved_yaml(cfg))


def _serve_settings(**options: Any) -> ServeSettings:
    """The endpoint's settings from the command's options; a bad one exits 2 with its reason
    (an unreadable API-keys file too, here rather than in every worker)."""
    from pydantic import ValidationError

    from fedsys.serving.endpoint_settings import ServeSettings

    try:
        settings = ServeSettings(**options)
        settings.api_keys()
    except (ValidationError, FedsysError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    return settings


@app.command()
def serve(
    registry: Annotated[Path, typer.Option("--registry", help="Registry directory to serve.")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = 8080,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    publisher_key: Annotated[
        Path | None,
        typer.Option(help="Trusted Ed25519 public key (default <registry>/publisher.pub)."),
    ] = None,
    api_keys: Annotated[
        Path | None, typer.Option(help="File of API keys, one per line; predict then needs one.")
    ] = None,
    max_batch_size: Annotated[int, typer.Option(help="Rows per model call (1: no batching).")] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="Longest wait for batch-mates.")] = 2.0,
    int8: Annotated[
        bool, typer.Option("--int8", help="Serve the int8 copy where present.")
    ] = False,
    torch_threads: Annotated[int, typer.Option(help="Torch threads per worker.")] = 1,
    variant: Annotated[
        str | None,
        typer.Option(
            "--variant",
            help="Compressed variant (fedsys compress) to serve by default where the active "
            "version has one; a request picks any with ?variant=.",
        ),
    ] = None,
    decode_batch: Annotated[
        int, typer.Option(help="Language models: sequences decoded in one forward pass.")
    ] = 64,
    max_sequences: Annotated[
        int, typer.Option(help="Language models: sequences admitted at once (429 beyond).")
    ] = 256,
    max_prompt_tokens: Annotated[
        int, typer.Option(help="Language models: longest prompt (400 beyond).")
    ] = 2048,
    max_total_tokens: Annotated[
        int,
        typer.Option(help="Language models: prompt + max_tokens over admitted sequences (429)."),
    ] = 1 << 17,
) -> None:
    """Serve a model registry over HTTP: fedsys's :predict, the Open Inference Protocol (/v2)
    and, for language models, the OpenAI API (/v1/completions). Publish token: env
    FEDSYS_PUBLISH_TOKEN."""
    from fedsys.serving.generation.limits import GenerationLimits
    from fedsys.serving.runner import free_port, serve_forever

    _setup_logging("INFO")
    if port == 0:  # pick the port here, so the line below (and the user) can name it
        port = free_port(host)
    settings = _serve_settings(
        registry=registry,
        host=host,
        port=port,
        workers=workers,
        publisher_key=publisher_key,
        api_keys_file=api_keys,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms,
        variant="int8" if int8 else "fp32",
        torch_threads=torch_threads,
        default_variant=variant,
        generation=GenerationLimits(
            max_batch=decode_batch,
            max_sequences=max_sequences,
            max_prompt_tokens=max_prompt_tokens,
            max_total_tokens=max_total_tokens,
        ),
    )
    err.print(
        f"serving {registry} on http://{host}:{port} with {workers} worker(s); loading torch "
        "and the active models (a few seconds; /readyz answers 200 once one is loaded)"
    )
    serve_forever(settings)


PRETRAIN_HELP = (
    "Train a language model's base centrally on the public split of its text (task: "
    "language_model) and write a Hugging Face checkpoint directory that lm.base can name.\n\n"
    "The summary line goes to stdout. Exit codes: 0 written, 1 training failed, 2 a config "
    "or usage error."
)


@app.command(help=PRETRAIN_HELP)
def pretrain(
    config: ConfigOpt = None,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Checkpoint directory to write.")
    ] = Path("runs/lm-base"),
    set_: SetOpt = None,
) -> None:
    """Pre-train a language model's base (help: PRETRAIN_HELP)."""
    cfg = _load(config, set_)
    if cfg.task != "language_model":
        err.print("[red]error:[/red] fedsys pretrain needs a config with task: language_model")
        raise typer.Exit(2)
    _setup_logging(cfg.runtime.log_level)
    from fedsys.tasks.lm.pretrain import pretrain as run

    err.print(
        f"pre-training {cfg.lm.size} on the public split for {cfg.lm.pretrain.steps} steps "
        "(importing transformers first)"
    )
    try:
        report = run(cfg, out_dir)
    except FedsysError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    stdout.print(
        f"[bold green]done[/bold green]: {report.parameters:,} parameters, public held-out "
        f"perplexity {report.public_perplexity:.2f} after {report.steps} steps "
        f"({report.seconds:.1f} s); base sha256 {report.base_sha256[:16]}...; "
        f"checkpoint in {out_dir}"
    )


# Deployment: keys and certificates, the aggregation server, the client daemon.
app.add_typer(keys_app, name="keys")
app.command("certs")(certs_cmd)
app.command("server")(server_cmd)
app.command("client")(client_cmd)
app.command("partition")(partition_cmd)
app.command("compress", help=COMPRESS_HELP)(compress_cmd)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
