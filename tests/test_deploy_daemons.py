"""Deployment pieces without a federation: settings, the node config, the warm trainer's
socket (and the fallback without it), and the supervisor's restart and stop behaviour."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.config import parse_config_args

from fedsys.client.deployed_app import call_worker, forward
from fedsys.client.node_data import read_node_data, write_partition
from fedsys.client.worker_protocol import Reply, Request, WorkerError, recv_frame, send_frame
from fedsys.config import ExperimentConfig
from fedsys.deploy.client_daemon import node_config, supernode_argv
from fedsys.deploy.server_daemon import superlink_argv, write_flwr_home, write_project
from fedsys.deploy.settings import Backoff, ClientSettings, ServerSettings, load_settings
from fedsys.deploy.supervise import Child, Supervisor
from fedsys.errors import ConfigError, DataError
from fedsys.protocol import HELLO_KEY, NodeHello

# ---------------------------------------------------------------- settings


def _client_settings(tmp_path: Path, **extra: Any) -> ClientSettings:
    raw = {
        "client_id": "edge-1",
        "superlink": "agg.example:9093",
        "root_certificates": "ca.pem",
        "auth_key": "node_auth",
        "signing_key": "signing.key",
        "data_path": "data with space.npz",
        "state_dir": "state",
        **extra,
    }
    path = tmp_path / "client.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_settings(path, ClientSettings)


def test_settings_resolve_relative_paths_against_the_file(tmp_path: Path) -> None:
    settings = _client_settings(tmp_path)
    assert settings.signing_key == tmp_path / "signing.key"
    assert settings.state_dir == tmp_path / "state"


def test_settings_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "server.yaml"
    path.write_text(yaml.safe_dump({"out_dir": "o", "state_dir": "s", "prot": 1}))
    with pytest.raises(ConfigError) as err:
        load_settings(path, ServerSettings)
    assert "server.yaml" in str(err.value) and "prot" in str(err.value)
    path.write_text(yaml.safe_dump({"out_dir": "o", "state_dir": "s"}))
    with pytest.raises(ConfigError, match="tls is required"):
        load_settings(path, ServerSettings)


def test_insecure_server_cannot_claim_node_auth() -> None:
    with pytest.raises(ValueError, match="node_auth needs TLS"):
        ServerSettings(out_dir=Path("o"), state_dir=Path("s"), insecure=True)
    ok = ServerSettings(out_dir=Path("o"), state_dir=Path("s"), insecure=True, node_auth=False)
    assert "--insecure" in superlink_argv(ok)
    assert "--enable-supernode-auth" not in superlink_argv(ok)


def test_node_config_round_trips_through_flowers_parser(tmp_path: Path) -> None:
    settings = _client_settings(tmp_path, partition_id=3)
    parsed = parse_config_args([node_config(settings)])
    assert parsed["client-id"] == "edge-1"
    assert parsed["partition-id"] == 3
    assert parsed["data-path"] == str(tmp_path / "data with space.npz")
    assert parsed["signing-key"] == str(tmp_path / "signing.key")
    assert parsed["worker-socket"] == str(tmp_path / "state/run/worker.sock")
    argv = supernode_argv(settings)
    assert argv[argv.index("--root-certificates") + 1] == str(tmp_path / "ca.pem")
    assert "--insecure" not in argv


def test_server_writes_flwr_home_and_a_minimal_app(tmp_path: Path) -> None:
    tls = {"ca_cert": "ca.pem", "cert": "s.pem", "key": "s.key"}
    path = tmp_path / "server.yaml"
    raw = {"out_dir": "out", "state_dir": "st", "port": 9555, "tls": tls}
    raw |= {"update_key": "u.key", "allow_list": "allow.json", "overrides": ["train.rounds=2"]}
    path.write_text(yaml.safe_dump(raw))
    settings = load_settings(path, ServerSettings)
    import tomllib

    home = tomllib.loads((write_flwr_home(settings) / "config.toml").read_text())
    conn = home["superlink"]["fedsys"]
    assert conn == {"address": "127.0.0.1:9555", "root-certificates": str(tmp_path / "ca.pem")}
    project = tomllib.loads((write_project(settings, resume=True) / "pyproject.toml").read_text())
    app_cfg = project["tool"]["flwr"]["app"]["config"]
    assert app_cfg["resume"] is True
    assert app_cfg["update-key"] == str(tmp_path / "u.key")
    assert app_cfg["overrides"] == "train.rounds=2"
    clientapp = project["tool"]["flwr"]["app"]["components"]["clientapp"]
    assert clientapp.startswith("fedsys.client.deployed_app")
    argv = superlink_argv(settings)
    assert "--enable-supernode-auth" in argv and "--disable-runtime-dependency-installation" in argv


# ---------------------------------------------------------------- node data


def test_partition_file_round_trip_and_bad_files(tmp_path: Path) -> None:
    cfg = ExperimentConfig.model_validate({"data": {"num_partitions": 4}})
    n = write_partition(cfg, 1, tmp_path / "p.npz")
    x, y = read_node_data(tmp_path / "p.npz")
    assert len(x) == len(y) == n and x.dtype.name == "float32"
    with pytest.raises(DataError, match="partition 9"):
        write_partition(cfg, 9, tmp_path / "q.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"bad\.npz"):
        read_node_data(tmp_path / "bad.npz")


# ---------------------------------------------------------------- warm trainer


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One warm trainer for the module's tests (it imports torch once, as in deployment)."""
    sock = tmp_path_factory.mktemp("worker") / "private" / "worker.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedsys.client.warm_worker", "--socket", str(sock)],
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the worker logs "ready" once it listens
        assert json.loads(line)["event"] == "ready", line
        yield sock
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(120) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


def _query() -> Message:
    return Message(content=RecordDict(), dst_node_id=7, message_type=MessageType.QUERY)


def _context(tmp_path: Path, **node: Any) -> Context:
    from fedsys.crypto.keys import generate_signing_key, write_private_key

    key = tmp_path / "signing.key"
    if not key.exists():
        write_private_key(key, generate_signing_key())
    config = {"client-id": "edge-1", "partition-id": 2, "signing-key": str(key), **node}
    return Context(run_id=1, node_id=7, node_config=config, state=RecordDict(), run_config={})


def test_worker_socket_is_private(worker: Path) -> None:
    assert worker.stat().st_mode & 0o777 == 0o600
    assert worker.parent.stat().st_mode & 0o777 == 0o700


def test_query_goes_through_the_worker(worker: Path, tmp_path: Path, task_identity: None) -> None:
    msg = _query()
    reply = call_worker(worker, msg, _context(tmp_path))
    hello = NodeHello.model_validate_json(str(reply.content.config_records["hello"][HELLO_KEY]))
    assert hello.client_id == "edge-1" and hello.partition_id == 2
    assert hello.signing_key is not None


def test_worker_failure_comes_back_as_an_error(
    worker: Path, tmp_path: Path, task_identity: None
) -> None:
    train_msg = Message(
        content=RecordDict({"config": ConfigRecord({"x": 1})}),
        dst_node_id=7,
        message_type=MessageType.TRAIN,
    )
    with pytest.raises(WorkerError, match="train"):
        call_worker(worker, train_msg, _context(tmp_path))


def test_worker_rejects_a_frame_of_another_protocol(worker: Path) -> None:
    import socket as socketlib

    with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as s:
        s.connect(str(worker))
        s.sendall(b"GET / HTTP/1.1\r\n\r\n")
        try:
            answer = s.recv(16)
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # closed without an answer
    # and still serves the next, valid request
    with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as s:
        s.connect(str(worker))
        send_frame(s, Request(kind="ping", message_bytes=0, context_bytes=0), b"")
        header, body = recv_frame(s, Reply)
        assert isinstance(header, Reply) and header.ok and body == b""


def test_without_a_worker_the_clientapp_runs_in_process(
    tmp_path: Path, task_identity: None
) -> None:
    ctx = _context(tmp_path, **{"worker-socket": str(tmp_path / "nobody.sock")})
    reply = forward(_query(), ctx)
    hello = NodeHello.model_validate_json(str(reply.content.config_records["hello"][HELLO_KEY]))
    assert hello.client_id == "edge-1"


# ---------------------------------------------------------------- supervisor

SUPERVISE = """
import sys
from pathlib import Path
from fedsys.deploy.settings import Backoff
from fedsys.deploy.supervise import Child, Supervisor
argv = [sys.executable, "-c", sys.argv[1]]
child = Child("c", argv, {}, Path(sys.argv[2]))
raise SystemExit(Supervisor("t", [child], Backoff(initial=0.05, max=0.2), refused_limit=2).run())
"""


def _supervise(tmp_path: Path, code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SUPERVISE, code, str(tmp_path / "child.log")],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _events_until(proc: subprocess.Popen[str], event: str, n: int = 1) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    seen: list[dict[str, Any]] = []
    while sum(e["event"] == event for e in seen) < n:
        line = proc.stdout.readline()
        assert line, f"supervisor ended before {n} x {event}: {seen}"
        seen.append(json.loads(line))
    return seen


def test_a_crashing_child_is_restarted_with_growing_delays(tmp_path: Path) -> None:
    proc = _supervise(tmp_path, "raise SystemExit(1)")
    try:
        seen = _events_until(proc, "restart_scheduled", 4)
        delays = [e["delay_s"] for e in seen if e["event"] == "restart_scheduled"]
        assert delays == [0.05, 0.1, 0.2, 0.2]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_sigterm_stops_the_child_and_exits_zero(tmp_path: Path) -> None:
    proc = _supervise(tmp_path, "import time; time.sleep(600)")
    try:
        started = _events_until(proc, "child_started")[-1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0
        assert proc.stdout is not None
        rest = [json.loads(x) for x in proc.stdout.read().splitlines()]
        assert [e["event"] for e in rest][-2:] == ["child_stopped", "stopped"]
        with pytest.raises(ProcessLookupError):
            os.kill(started["pid"], 0)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_refused_supernode_makes_the_daemon_give_up(tmp_path: Path) -> None:
    code = "print('ERROR : Exit Code: 305', flush=True); raise SystemExit(1)"
    proc = _supervise(tmp_path, code)
    assert proc.wait(120) == 3
    assert proc.stdout is not None
    seen = [json.loads(x)["event"] for x in proc.stdout.read().splitlines()]
    assert seen.count("supernode_refused") == 2 and "giving_up" in seen


def test_backoff_resets_after_a_long_run() -> None:
    child = Child("c", ["true"], {}, Path("/dev/null"), delay=0.8)
    sup = Supervisor("t", [child], Backoff(initial=0.1, max=1.0, reset_after=0.01))
    child.started = time.monotonic() - 1.0
    assert sup._exited(child, 1)
    assert child.delay == 0.1


# ---------------------------------------------------------------- examples

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "deployment"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("server.yaml", ServerSettings),
        ("client.yaml", ClientSettings),
        ("compose/server.yaml", ServerSettings),
        ("compose/client-1.yaml", ClientSettings),
        ("compose/client-2.yaml", ClientSettings),
    ],
)
def test_example_settings_are_valid(name: str, kind: type[Any]) -> None:
    load_settings(EXAMPLES / name, kind)


@pytest.mark.parametrize("name", ["experiment.yaml", "compose/experiment.yaml"])
def test_example_experiments_are_valid(name: str) -> None:
    from fedsys.config import load_config

    cfg = load_config(EXAMPLES / name)
    assert cfg.codec.encrypt and cfg.codec.quantize == "int8"


def test_run_config_of_a_deployed_run_loads_keys_from_files(tmp_path: Path) -> None:
    from fedsys.crypto import public_to_raw
    from fedsys.deploy.keys_cli import create_aggregator_keys, create_client_keys
    from fedsys.deploy.layout import KeyLayout
    from fedsys.server.server_app import launch_from_run_config

    layout = KeyLayout(tmp_path / "keys")
    create_aggregator_keys(layout)
    create_client_keys(layout, "a")
    launch = launch_from_run_config(
        {
            "config-file": "",
            "overrides": "train.rounds=2;codec.encrypt=true",
            "out-dir": str(tmp_path / "out"),
            "update-key": str(layout.update_key),
            "allow-list": str(layout.allow_list),
            "resume": True,
        }
    )
    assert launch.resume is True
    keys = launch.deployed_keys()
    assert keys is not None and set(keys.allow_list) == {"a"}
    expected = bytes.fromhex(layout.update_pub.read_text().strip())
    assert public_to_raw(keys.exchange_key.public_key()) == expected
    plain = launch_from_run_config({"out-dir": str(tmp_path / "o2")})
    assert plain.deployed_keys() is None and plain.resume is False


def test_thin_clientapp_forwards_every_message_type_of_the_fedsys_clientapp() -> None:
    from fedsys.client import deployed_app as thin_client
    from fedsys.client.client_app import app as full

    # a message type the full app answers but the thin one does not would fail deployed
    assert set(full._registered_funcs) <= set(thin_client.app._registered_funcs)


def test_thin_clientapp_imports_neither_torch_nor_the_fedsys_clientapp() -> None:
    code = (
        "import sys, fedsys.client.deployed_app; "
        "print(sorted(m for m in ('torch', 'fedsys.client.client_app') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
