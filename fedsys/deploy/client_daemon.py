"""``fedsys client``: a supervised Flower SuperNode plus the warm trainer it hands work to.

The SuperNode (``flower-supernode``) connects to the SuperLink over TLS with the node's
authentication key and starts a ``flwr-clientapp`` process per message; the fedsys ClientApp
in there hands the work to the warm trainer over a private Unix socket (see
:mod:`fedsys.client.warm_worker`). Both children are restarted with backoff when they exit (a
SuperLink restart makes the SuperNode exit or retry), and SIGTERM stops both and exits 0.
Children die with the daemon and a second daemon on the same state directory is refused
(:mod:`fedsys.deploy.lifetime`); lost and regained SuperLink connections are logged
(:mod:`fedsys.deploy.connection`).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from fedsys.client.node_config import CLIENT_ID, DATA_PATH, PARTITION_ID, SIGNING_KEY, WORKER_SOCKET
from fedsys.client.warm_worker import prepare_private_dir
from fedsys.crypto.keys import read_secret_file, read_signing_key
from fedsys.deploy.connection import ConnectionWatch
from fedsys.deploy.layout import check_client_id
from fedsys.deploy.lifetime import DaemonConflict, Lifetime, check_port_free, claim
from fedsys.deploy.settings import ClientSettings
from fedsys.deploy.supervise import Child, Supervisor, emit
from fedsys.deploy.toml_text import toml_value
from fedsys.processes import child_env, find_executable

COMPONENT = "client"


def socket_path(settings: ClientSettings) -> Path:
    return settings.state_dir / "run" / "worker.sock"


def node_config(settings: ClientSettings) -> str:
    """The SuperNode's ``--node-config``: what the fedsys ClientApp reads from its context."""
    items: dict[str, str | int] = {
        CLIENT_ID: settings.client_id,
        PARTITION_ID: settings.partition_id,
        SIGNING_KEY: str(settings.signing_key),
    }
    if settings.data_path is not None:
        items[DATA_PATH] = str(settings.data_path)
    if settings.warm_worker:
        items[WORKER_SOCKET] = str(socket_path(settings))
    return " ".join(f"{k}={toml_value(v)}" for k, v in items.items())


def supernode_argv(settings: ClientSettings) -> list[str]:
    argv = [
        find_executable("flower-supernode"),
        "--superlink",
        settings.superlink,
        "--port",
        str(settings.runtime_port),
        "--node-config",
        node_config(settings),
    ]
    if settings.insecure:
        argv.append("--insecure")
    else:
        argv += ["--root-certificates", str(settings.root_certificates)]
    if settings.auth_key is not None:
        argv += ["--auth-supernode-private-key", str(settings.auth_key)]
    if settings.fast_tasks:
        argv += ["--isolation", "process"]  # tasks come from fedsys.client.task_runner
    return argv


def runtime_address(settings: ClientSettings) -> str:
    """The SuperNode's local runtime API (where ClientApp tasks are handed out)."""
    return f"127.0.0.1:{settings.runtime_port}"


def check_files(settings: ClientSettings) -> None:
    """Fail at start-up, with the file named, rather than at the first round."""
    check_client_id(settings.client_id)
    read_signing_key(settings.signing_key)
    if settings.auth_key is not None:
        read_secret_file(settings.auth_key)
    if settings.root_certificates is not None and not settings.root_certificates.is_file():
        raise FileNotFoundError(f"root_certificates {settings.root_certificates} is missing")
    if settings.data_path is not None and not settings.data_path.exists():
        raise FileNotFoundError(f"data_path {settings.data_path} is missing")


def build_supervisor(settings: ClientSettings, lifetime: Lifetime | None = None) -> Supervisor:
    env = child_env()
    logs = settings.state_dir / "logs"
    children: list[Child] = []
    if settings.warm_worker:
        prepare_private_dir(socket_path(settings).parent)
        worker_argv = [sys.executable, "-m", "fedsys.client.warm_worker"]
        worker_argv += ["--socket", str(socket_path(settings))]
        children.append(Child("worker", worker_argv, env, logs / "worker.log"))
    supernode = Child("supernode", supernode_argv(settings), env, logs / "supernode.log")
    children.append(supernode)
    if settings.fast_tasks:
        runner_argv = [sys.executable, "-m", "fedsys.client.task_runner"]
        runner_argv += ["--runtime-api-address", runtime_address(settings)]
        children.append(Child("task-runner", runner_argv, env, logs / "task_runner.log"))
    return Supervisor(
        COMPONENT,
        children,
        settings.backoff,
        stop_timeout=settings.stop_timeout,
        refused_limit=settings.refused_limit,
        on_tick=ConnectionWatch(COMPONENT, supernode).tick,
        lifetime=lifetime,
    )


def claim_state_dir(settings: ClientSettings) -> Lifetime:
    """Own ``state_dir``: refuse a second live daemon on it, stop what an earlier instance
    left running, and refuse a runtime port held by anything else."""
    lifetime = claim(settings.state_dir, COMPONENT, settings.stop_timeout, emit)
    try:
        check_port_free("127.0.0.1", settings.runtime_port)
    except DaemonConflict:
        lifetime.release()
        raise
    return lifetime


def run_client(settings: ClientSettings) -> int:
    """Run until SIGTERM (0) or until the SuperLink keeps refusing this node (3)."""
    check_files(settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    lifetime = claim_state_dir(settings)
    try:
        supervisor = build_supervisor(settings, lifetime)
        emit(
            COMPONENT,
            "starting",
            client_id=settings.client_id,
            superlink=settings.superlink,
            tls=not settings.insecure,
            node_auth=settings.auth_key is not None,
            warm_worker=settings.warm_worker,
            fast_tasks=settings.fast_tasks,
            supernode=shlex.join(supernode_argv(settings)[:3]),
            instance=lifetime.instance,
        )
        return supervisor.run()
    finally:
        lifetime.release()
