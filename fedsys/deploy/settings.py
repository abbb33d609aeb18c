"""Deployment settings for ``fedsys server`` and ``fedsys client``, one YAML file each.

These describe a machine (addresses, key files, the data path, the state directory), not an
experiment: the experiment stays an ``ExperimentConfig`` file the server submits with the run.
Relative paths are resolved against the settings file's directory, so a file and the keys
next to it can be moved together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fedsys.errors import ConfigError


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TLSFiles(_Settings):
    """The SuperLink's TLS files (server side) made by ``fedsys certs``."""

    ca_cert: Path
    cert: Path
    key: Path


class Backoff(_Settings):
    """Restart delays of a supervised child (SuperNode, SuperLink): doubling from ``initial``
    up to ``max``."""

    initial: float = Field(default=1.0, gt=0)
    max: float = Field(default=60.0, gt=0)
    reset_after: float = Field(
        default=60.0, gt=0, description="A run this long resets the delay to ``initial``."
    )


class ServerSettings(_Settings):
    """One aggregation server: its SuperLink, the keys, the experiment and its outputs."""

    experiment: Path | None = Field(default=None, description="ExperimentConfig YAML.")
    overrides: list[str] = Field(default_factory=list, description="Dotted experiment overrides.")
    out_dir: Path = Field(description="Run outputs: metrics, checkpoints, final model.")
    state_dir: Path = Field(description="SuperLink database, flwr home, logs.")
    host: str = Field(default="0.0.0.0", description="SuperLink listen address.")
    port: int = Field(default=9093, ge=1, le=65535, description="SuperLink HTTPS port.")
    address: str | None = Field(
        default=None,
        description="host:port the CLI dials (default 127.0.0.1:<port>); with connect_only, "
        "the existing SuperLink's address.",
    )
    connect_only: bool = Field(
        default=False, description="Use a SuperLink that is already running; start none."
    )
    insecure: bool = Field(default=False, description="No TLS (development only).")
    tls: TLSFiles | None = None
    node_auth: bool = Field(default=True, description="Only registered SuperNodes may join.")
    node_keys: list[Path] = Field(
        default_factory=list, description="OpenSSH public keys of the SuperNodes to register."
    )
    update_key: Path | None = Field(
        default=None, description="Aggregator's X25519 key (needed with codec.encrypt)."
    )
    allow_list: Path | None = Field(
        default=None, description="Client id -> update-signing key (needed with codec.encrypt)."
    )
    publish_key: Path | None = Field(default=None, description="Ed25519 model-publishing key.")
    wait_for_nodes: int = Field(
        default=0, ge=0, description="Submit the run once this many SuperNodes are online."
    )
    backoff: Backoff = Field(
        default_factory=lambda: Backoff(initial=1.0, max=30.0),
        description="Restart delays of a SuperLink that died.",
    )
    superlink_restart_limit: int = Field(
        default=5,
        ge=0,
        description="Give up (exit 1) after this many SuperLink restarts in a row, each "
        "dying within backoff.reset_after seconds; 0: never restart it.",
    )

    @model_validator(mode="after")
    def _check(self) -> ServerSettings:
        if not self.insecure and self.tls is None:
            raise ValueError("tls is required unless insecure: true")
        if self.node_auth and self.insecure:
            raise ValueError("node_auth needs TLS; set insecure: false or node_auth: false")
        if (self.update_key is None) != (self.allow_list is None):
            raise ValueError("update_key and allow_list go together")
        return self

    @property
    def dial_address(self) -> str:
        if self.address:
            return self.address
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"{host}:{self.port}"


class ClientSettings(_Settings):
    """One edge client: which SuperLink, its keys, its data, and the warm trainer."""

    client_id: str = Field(min_length=1, max_length=64)
    superlink: str = Field(description="SuperLink host:port.")
    insecure: bool = False
    root_certificates: Path | None = Field(default=None, description="The CA's certificate.")
    auth_key: Path | None = Field(default=None, description="OpenSSH ECDSA SuperNode key.")
    signing_key: Path = Field(description="Ed25519 update-signing key (fedsys keys client).")
    data_path: Path | None = Field(
        default=None, description="This node's data: a directory or an .npz with x, y."
    )
    partition_id: int = Field(default=0, ge=0, description="Built-in datasets: which partition.")
    state_dir: Path = Field(description="Private runtime files: worker socket, residuals.")
    runtime_port: int = Field(
        default=9094, ge=1, le=65535, description="Local port of the SuperNode's runtime API."
    )
    warm_worker: bool = Field(
        default=True, description="Keep model, data and device loaded between rounds."
    )
    fast_tasks: bool = Field(
        default=True,
        description="Run ClientApp tasks from a pre-imported process (fork per task) instead "
        "of a fresh flwr-clientapp interpreter per message.",
    )
    backoff: Backoff = Field(default_factory=Backoff)
    stop_timeout: float = Field(default=20.0, gt=0, description="Seconds to wait on SIGTERM.")
    refused_limit: int = Field(
        default=3, ge=1, description="Give up after this many refusals in a row (exit 3)."
    )

    @model_validator(mode="after")
    def _check(self) -> ClientSettings:
        if not self.insecure and self.root_certificates is None:
            raise ValueError("root_certificates is required unless insecure: true")
        return self


S = TypeVar("S", ServerSettings, ClientSettings)

_PATH_FIELDS = {
    "experiment",
    "out_dir",
    "state_dir",
    "node_keys",
    "update_key",
    "allow_list",
    "publish_key",
    "root_certificates",
    "auth_key",
    "signing_key",
    "data_path",
    "ca_cert",
    "cert",
    "key",
}


def _resolve(node: Any, base: Path) -> Any:
    """Make relative path values absolute against ``base`` (the settings file's folder)."""
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _PATH_FIELDS and isinstance(value, str):
                out[key] = str((base / Path(value).expanduser()).resolve())
            elif key in _PATH_FIELDS and isinstance(value, list):
                out[key] = [str((base / Path(str(v)).expanduser()).resolve()) for v in value]
            else:
                out[key] = _resolve(value, base)
        return out
    return node


def load_settings(path: Path, kind: type[S]) -> S:
    """Read ``path`` as ``kind``; a ConfigError names the file and every bad field."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read settings file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"settings file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"settings file {path} must hold a mapping")
    try:
        return kind.model_validate(_resolve(raw, Path(path).resolve().parent))
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: "
            f"{e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        ]
        raise ConfigError(f"invalid settings in {path}:\n" + "\n".join(lines)) from None
