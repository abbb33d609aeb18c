"""``fedsys server``: a Flower SuperLink with TLS and node authentication, and the fedsys run.

Steps, each logged as one JSON line: claim the state directory (see
:mod:`fedsys.deploy.lifetime`), start ``flower-superlink`` (or use a running one), wait until
it accepts connections, register the allowed SuperNodes' public keys, submit the fedsys
ServerApp with ``flwr run`` (runtime dependency installation off), and follow the run until it
finishes. A SuperLink that dies is restarted with backoff (``superlink_restart_limit`` quick
restarts in a row at most) and a new run resumes from the last checkpoint. The ``flwr`` CLI
is driven through a private ``FLWR_HOME`` under the state directory whose ``config.toml``
holds one connection, ``fedsys``; the same home works for ``flwr ls``, ``flwr log`` and
``flwr stop`` by hand (``FLWR_HOME=<state>/flwr-home flwr ls fedsys``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fedsys.config import ExperimentConfig, load_config
from fedsys.deploy.lifetime import DaemonConflict, Lifetime, check_port_free, claim
from fedsys.deploy.settings import ServerSettings
from fedsys.deploy.supervise import Child, Supervisor, emit
from fedsys.deploy.toml_text import toml_value
from fedsys.errors import ConfigError, FedsysError
from fedsys.node_roster import ROSTER_FILE, client_id_of_node_key, record_node
from fedsys.processes import child_env, find_executable

COMPONENT = "server"
CONNECTION = "fedsys"
STATUS_EVERY = 10.0  # seconds between `flwr ls` calls (each one is a Python process)
FLWR_TIMEOUT = 120.0


class DeployError(FedsysError):
    """A SuperLink or ``flwr`` CLI step failed; the message names the step."""


def flwr_home(settings: ServerSettings) -> Path:
    return settings.state_dir / "flwr-home"


def write_flwr_home(settings: ServerSettings) -> Path:
    """``<state>/flwr-home/config.toml`` with the ``fedsys`` connection (TLS unless insecure)."""
    home = flwr_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    lines = [
        "[superlink]",
        f"default = {toml_value(CONNECTION)}",
        "",
        f"[superlink.{CONNECTION}]",
        f"address = {toml_value(settings.dial_address)}",
    ]
    if settings.insecure:
        lines.append("insecure = true")
    else:
        assert settings.tls is not None
        lines.append(f"root-certificates = {toml_value(str(settings.tls.ca_cert))}")
    (home / "config.toml").write_text("\n".join(lines) + "\n")
    return home


def experiment_overrides(settings: ServerSettings) -> list[str]:
    """The settings' overrides, plus the publishing key when the settings name one."""
    extra = [f"publish.signing_key={settings.publish_key}"] if settings.publish_key else []
    return [*settings.overrides, *extra]


def roster_path(settings: ServerSettings) -> Path:
    """Where the registered nodes' ids are kept: beside the SuperLink database that made them."""
    return settings.state_dir / ROSTER_FILE


def write_project(settings: ServerSettings, *, resume: bool) -> Path:
    """A minimal Flower App project whose components are the installed fedsys apps.

    The FAB ``flwr run`` builds from it holds only this ``pyproject.toml``: code comes from
    the fedsys installed on each machine, so nothing is fetched or built at run time.
    """
    project = settings.state_dir / "app"
    project.mkdir(parents=True, exist_ok=True)
    config: dict[str, str | bool] = {
        "config-file": str(settings.experiment) if settings.experiment else "",
        "overrides": ";".join(experiment_overrides(settings)),
        "out-dir": str(settings.out_dir),
        "update-key": str(settings.update_key) if settings.update_key else "",
        "allow-list": str(settings.allow_list) if settings.allow_list else "",
        "roster": str(roster_path(settings)) if settings.node_auth else "",
        "resume": resume,
    }
    text = "\n".join(
        [
            "[build-system]",
            'requires = ["hatchling"]',
            'build-backend = "hatchling.build"',
            "",
            "[project]",
            'name = "fedsys-deployment"',
            'version = "1.0.0"',
            "dependencies = []",
            "",
            "[tool.flwr.app]",
            'publisher = "fedsys"',
            "",
            "[tool.flwr.app.components]",
            'serverapp = "fedsys.app:server_app"',
            'clientapp = "fedsys.client.deployed_app:app"',
            "",
            "[tool.flwr.app.config]",
            *(f"{k} = {toml_value(v)}" for k, v in config.items()),
            "",
        ]
    )
    (project / "pyproject.toml").write_text(text)
    return project


def superlink_argv(settings: ServerSettings) -> list[str]:
    argv = [
        find_executable("flower-superlink"),
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--database",
        str(settings.state_dir / "superlink.db"),
        "--disable-runtime-dependency-installation",
    ]
    if settings.insecure:
        return [*argv, "--insecure"]
    assert settings.tls is not None
    argv += [
        "--ssl-ca-certfile",
        str(settings.tls.ca_cert),
        "--ssl-certfile",
        str(settings.tls.cert),
        "--ssl-keyfile",
        str(settings.tls.key),
    ]
    if settings.node_auth:
        argv.append("--enable-supernode-auth")
    return argv


class FlwrCli:
    """The ``flwr`` CLI against the ``fedsys`` connection in a private FLWR_HOME."""

    def __init__(self, home: Path) -> None:
        self.env = child_env()
        self.env["FLWR_HOME"] = str(home)

    def __call__(self, *args: str, timeout: float = FLWR_TIMEOUT) -> dict[str, object]:
        argv = [find_executable("flwr"), *args, "--format", "json"]
        try:
            done = subprocess.run(
                argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise DeployError(f"`flwr {args[0]}` did not answer within {timeout:.0f} s") from None
        try:
            data = json.loads(done.stdout[done.stdout.find("{") :])
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if done.returncode != 0 or data.get("success") is False:
            detail = data.get("error-message") or done.stderr.strip()[-400:] or done.stdout[-400:]
            raise DeployError(f"`flwr {' '.join(args[:2])}` failed: {detail}")
        return data


class SuperLinkGone(DeployError):
    """The SuperLink this daemon started exited; the supervisor restarts it."""


def wait_reachable(address: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Until a TCP connection to ``address`` succeeds (the SuperLink is listening).

    ``alive`` says whether the SuperLink we started still runs: a listener found while it
    is dead belongs to someone else and is never used.
    """
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            raise SuperLinkGone(f"the SuperLink exited before {address} accepted connections")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2.0):
                if not alive():
                    raise SuperLinkGone(f"the SuperLink exited; {address} answers for another")
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise DeployError(f"SuperLink at {address} unreachable: {exc}") from None
            time.sleep(0.3)


def register_nodes(cli: FlwrCli, keys: list[Path], roster: Path | None = None) -> None:
    """Register each SuperNode public key; a key registered before is left as it is.

    The node id the SuperLink answers with is the one that key's node will always have, so
    it goes into ``roster`` under the key's client id (its ``fedsys-<id>`` comment or its
    ``clients/<id>/`` folder): the ServerApp then knows who each node is without asking.
    """
    for key in keys:
        try:
            data = cli("supernode", "register", str(key), CONNECTION)
        except DeployError as exc:
            if "already in use" not in str(exc):
                raise
            emit(COMPONENT, "node_already_registered", key=str(key))
            continue
        node_id, client = _node_id(data.get("node-id")), client_id_of_node_key(key)
        if roster is not None and node_id is not None and client is not None:
            record_node(roster, client, node_id)  # on disk before anyone hears of the node
        emit(COMPONENT, "node_registered", key=str(key), node_id=node_id, client_id=client)


def _node_id(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def online_nodes(cli: FlwrCli) -> int:
    data = cli("supernode", "ls", CONNECTION)
    nodes = data.get("nodes")
    if not isinstance(nodes, list):
        return 0
    return sum(1 for n in nodes if isinstance(n, dict) and n.get("status") == "online")


def submit_run(cli: FlwrCli, project: Path) -> str:
    data = cli("run", str(project), CONNECTION)
    run_id = str(data.get("run-id", ""))
    if not run_id:
        raise DeployError(f"`flwr run` returned no run id: {data}")
    return run_id


def run_status(cli: FlwrCli, run_id: str) -> str:
    data = cli("ls", CONNECTION, "--run-id", run_id)
    runs = data.get("runs")
    if isinstance(runs, list) and runs and isinstance(runs[0], dict):
        return str(runs[0].get("status", "unknown"))
    return "unknown"


def validate_experiment(settings: ServerSettings) -> ExperimentConfig:
    cfg = load_config(settings.experiment, experiment_overrides(settings))
    if cfg.codec.encrypt and settings.update_key is None:
        raise ConfigError(
            "codec.encrypt is on: the server settings need update_key and allow_list "
            "(made by `fedsys keys aggregator` and `fedsys keys client`)"
        )
    return cfg


class RunFollower:
    """The steps after the SuperLink is up, driven from the supervisor's loop.

    When the supervised SuperLink dies, the supervisor stops what it left running (SuperExec,
    the ServerApp) and starts a new one after a backoff; the follower then stops the old
    run, registers the nodes again and submits a new run that resumes from the checkpoint.
    """

    def __init__(
        self,
        settings: ServerSettings,
        cli: FlwrCli,
        supervisor: Supervisor,
        *,
        resume: bool,
        superlink: Child | None = None,
    ) -> None:
        self.settings = settings
        self.cli = cli
        self.supervisor = supervisor
        self.resume = resume
        self.superlink = superlink
        self.generation = superlink.generation if superlink else 0
        self.run_id: str | None = None
        self.lost_run: str | None = None  # the run of a SuperLink that died
        self.status = ""
        self.next_check = 0.0
        self.submitted_at = 0.0

    def _superlink_alive(self) -> bool:
        if self.superlink is None:
            return True
        return self.superlink.proc is not None and self.superlink.proc.poll() is None

    def tick(self) -> None:
        if self.superlink is not None and self.superlink.generation != self.generation:
            restarted = self.generation != 0  # 0: the first start, seen at the first tick
            self.generation = self.superlink.generation
            if restarted:
                self.lost_run = self.run_id or self.lost_run
                emit(COMPONENT, "superlink_restarted", lost_run=self.lost_run, resume=True)
                self.run_id, self.status, self.resume = None, "", True
        if not self._superlink_alive():
            return  # the supervisor restarts it (or gives up)
        try:
            if self.run_id is None:
                self._start()
            elif time.monotonic() >= self.next_check or self._summary_written():
                self._follow()
        except FedsysError as exc:
            if isinstance(exc, SuperLinkGone) or not self._superlink_alive():
                emit(COMPONENT, "superlink_lost", step="follow", error=str(exc))
                return
            emit(COMPONENT, "failed", error=str(exc))
            self.supervisor.finish(1)

    def _start(self) -> None:
        wait_reachable(self.settings.dial_address, timeout=60.0, alive=self._superlink_alive)
        emit(COMPONENT, "superlink_reachable", address=self.settings.dial_address)
        # After a SuperLink restart its database still holds the registered nodes (and
        # shows them online until their heartbeat expires): the ServerApp's own wait for
        # nodes is the one that counts, so the restart goes straight to the new run.
        restart = self.lost_run is not None
        if self.settings.node_auth and not restart:
            register_nodes(self.cli, self.settings.node_keys, roster_path(self.settings))
        if self.settings.wait_for_nodes and not restart:
            self._wait_for_nodes(self.settings.wait_for_nodes)
        project = write_project(self.settings, resume=self.resume)
        self.run_id = submit_run(self.cli, project)
        emit(COMPONENT, "run_submitted", run_id=self.run_id, resume=self.resume)
        self.submitted_at = time.time()
        self.next_check = time.monotonic() + STATUS_EVERY
        if self.lost_run is not None:
            self._stop_lost_run(self.lost_run)

    def _stop_lost_run(self, run_id: str) -> None:
        """The dead SuperLink's run stays 'running' in its database: stop it, so it is never
        started again; its ServerApp is gone already (the supervisor made sure)."""
        try:
            self.cli("stop", run_id, CONNECTION, timeout=30.0)
            emit(COMPONENT, "lost_run_stopped", run_id=run_id)
        except DeployError as exc:
            emit(COMPONENT, "lost_run_stopped", run_id=run_id, note=str(exc)[-200:])
        self.lost_run = None

    def _wait_for_nodes(self, wanted: int) -> None:
        online = -1
        while not self.supervisor.stopping:
            if not self._superlink_alive():
                raise SuperLinkGone("the SuperLink exited while waiting for SuperNodes")
            now = online_nodes(self.cli)
            if now != online:
                online = now
                emit(COMPONENT, "nodes_online", online=online, wanted=wanted)
            if online >= wanted:
                return
            time.sleep(1.0)
        raise DeployError(f"stopped while waiting for {wanted} SuperNodes")

    def _summary_written(self) -> bool:
        """The ServerApp writes summary.json last: then the run is about to finish."""
        try:
            return (self.settings.out_dir / "summary.json").stat().st_mtime >= self.submitted_at
        except OSError:
            return False

    def _follow(self) -> None:
        assert self.run_id is not None
        status = run_status(self.cli, self.run_id)
        self.next_check = time.monotonic() + STATUS_EVERY
        if self._summary_written() and not status.startswith("finished"):
            time.sleep(1.0)  # the ServerApp process is exiting; ask again shortly
        if status != self.status:
            self.status = status
            emit(COMPONENT, "run_status", run_id=self.run_id, status=status)
        if status.startswith("finished"):
            self.supervisor.finish(0 if status.endswith("completed") else 1)


def warn_insecure() -> None:
    banner = "!" * 72
    sys.stderr.write(
        f"{banner}\n"
        "WARNING: fedsys server runs WITHOUT TLS and WITHOUT SuperNode authentication.\n"
        "Model updates and weights travel in clear text and ANY machine that reaches the\n"
        "port can join the federation. Use this only on a trusted development network.\n"
        f"{banner}\n"
    )
    emit(COMPONENT, "insecure_mode", tls=False, node_auth=False)


def claim_state_dir(settings: ServerSettings) -> Lifetime:
    """Own ``state_dir`` (refuse a second live daemon), stop what an earlier instance left
    running, and make sure the SuperLink port is free: never attach to a stale SuperLink."""
    lifetime = claim(settings.state_dir, COMPONENT, 20.0, emit)
    if not settings.connect_only:
        try:
            check_port_free(settings.host, settings.port)
        except DaemonConflict:
            lifetime.release()
            raise
    return lifetime


def run_server(settings: ServerSettings, *, resume: bool = False) -> int:
    """Serve the federation until the run finishes (0), fails (1) or SIGTERM (0)."""
    validate_experiment(settings)
    if settings.insecure:
        warn_insecure()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    lifetime = claim_state_dir(settings)
    try:
        cli = FlwrCli(write_flwr_home(settings))
        children = []
        superlink: Child | None = None
        if not settings.connect_only:
            superlink = Child(
                "superlink",
                superlink_argv(settings),
                child_env(),
                settings.state_dir / "logs" / "superlink.log",
                restart=settings.superlink_restart_limit > 0,
                restart_limit=settings.superlink_restart_limit,
            )
            children.append(superlink)
        supervisor = Supervisor(
            COMPONENT, children, settings.backoff, stop_timeout=20.0, lifetime=lifetime
        )
        follower = RunFollower(settings, cli, supervisor, resume=resume, superlink=superlink)
        supervisor.on_tick = follower.tick
        emit(
            COMPONENT,
            "starting",
            address=settings.dial_address,
            tls=not settings.insecure,
            node_auth=settings.node_auth,
            connect_only=settings.connect_only,
            flwr_home=str(flwr_home(settings)),
            out_dir=str(settings.out_dir),
            instance=lifetime.instance,
        )
        return supervisor.run()
    finally:
        lifetime.release()
