"""A real deployment on loopback: SuperLink with TLS and node authentication, client daemons,
encrypted int8 updates, a client lost mid-run, a server crash resumed from its checkpoint,
and the final model served by the endpoint.

Every process is started through the ``procs`` fixture, which stops (SIGTERM, then SIGKILL of
each process group, the daemons' children included) whatever is still running at the end.
Every wait has a deadline, so a hang fails the test instead of stalling CI. Deselect with
``-m "not deployment"``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from fedsys.node_roster import load_roster

pytestmark = pytest.mark.deployment

FEDSYS = [sys.executable, "-m", "fedsys.cli"]
DEADLINE = 1800.0  # a hang guard: the scenario takes ~3 minutes here, more on a slow runner


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def events(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a daemon wrote to stdout so far (every line must be JSON)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


MARKER = "FEDSYS_TEST_DAEMON"


def marked(value: str) -> list[int]:
    """Pids of live processes whose environment has ``MARKER=value``."""
    needle = f"{MARKER}={value}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
    return pids


class Procs:
    """Processes started by the test; all of them and their children are stopped at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str]
    ) -> tuple[subprocess.Popen[bytes], Path]:
        out = self.root / f"{name}.out"
        # Every process this daemon starts inherits the marker, including ones Flower starts
        # detached from it (the SuperLink's executor and its flwr-serverapp).
        env = {**env, MARKER: str(out)}
        with out.open("wb") as fh, (self.root / f"{name}.err").open("wb") as err:
            proc = subprocess.Popen(
                argv, env=env, stdout=fh, stderr=err, start_new_session=True, cwd=self.root
            )
        self.started.append((proc, out))
        return proc, out

    def kill_tree(self, proc: subprocess.Popen[bytes], out: Path) -> None:
        """SIGKILL a daemon and every process it started, as if its machine died: its
        children's process groups (pids from its events) and any process carrying its marker."""
        groups = [proc.pid] + [
            int(e["pid"]) for e in events(out) if e.get("event") == "child_started"
        ]
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        for pid in marked(str(out)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, out in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
            self.kill_tree(proc, out)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


def wait_for(
    what: str, check: Callable[[], Any], deadline: float, procs: Procs, poll: float = 0.2
) -> Any:
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {o.name}\n{o.read_text()[-3000:]}" for _, o in procs.started if o.exists()
            )
            pytest.fail(f"timed out waiting for {what}\n{logs}")
        time.sleep(poll)


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_deployed_federation(tmp_path: Path, procs: Procs) -> None:
    deadline = time.monotonic() + DEADLINE
    env = dict(os.environ)
    env["FEDSYS_PUBLISH_TOKEN"] = "test-publish-token"
    env["PYTHONUNBUFFERED"] = "1"
    run = lambda *args: subprocess.run(  # noqa: E731
        [*FEDSYS, *args], env=env, cwd=tmp_path, check=True, capture_output=True, timeout=600
    )

    # Keys: aggregator, three allowed clients, a fourth that is never registered; TLS.
    keys = tmp_path / "keys"
    run("keys", "aggregator", "--dir", str(keys))
    run("keys", "client", "a", "b", "c", "--dir", str(keys))
    run("keys", "client", "rogue", "--dir", str(keys), "--no-allow")
    run("certs", "--dir", str(keys), "--name", "localhost", "--name", "127.0.0.1")
    assert (keys / "clients/a/node_auth").stat().st_mode & 0o777 == 0o600
    assert set(json.loads((keys / "aggregator/allow_list.json").read_text())) == {"a", "b", "c"}

    # The endpoint the server publishes to.
    serve_port = free_port()
    registry = tmp_path / "endpoint-registry"
    procs.start(
        "endpoint",
        [
            *FEDSYS,
            "serve",
            "--registry",
            str(registry),
            "--port",
            str(serve_port),
            "--publisher-key",
            str(keys / "aggregator/publish.pub"),
        ],
        env,
    )

    experiment = write_yaml(
        tmp_path / "experiment.yaml",
        {
            "name": "deployed",
            "data": {"num_partitions": 3},
            "model": {"channels": 8},
            "train": {"rounds": 5, "max_steps": 5, "timeout": 120},
            "strategy": {"min_available_nodes": 2, "min_train_nodes": 2},
            "codec": {"quantize": "int8", "encrypt": True},
            "publish": {"mode": "at_end", "endpoint": f"http://127.0.0.1:{serve_port}"},
            "runtime": {"progress": False},
        },
    )
    for i in range(3):
        run("partition", "-c", str(experiment), "--partition-id", str(i), "-o", f"data/{i}.npz")

    port = free_port()
    server_cfg = write_yaml(
        tmp_path / "server.yaml",
        {
            "experiment": str(experiment),
            "out_dir": "out",
            "state_dir": "state/server",
            "host": "127.0.0.1",
            "port": port,
            "tls": {
                "ca_cert": "keys/tls/ca.pem",
                "cert": "keys/tls/server.pem",
                "key": "keys/tls/server.key",
            },
            "node_keys": [f"keys/clients/{c}/node_auth.pub" for c in "abc"],
            "update_key": "keys/aggregator/update.key",
            "allow_list": "keys/aggregator/allow_list.json",
            "publish_key": "keys/aggregator/publish.key",
            "wait_for_nodes": 3,
        },
    )
    server, server_out = procs.start("server", [*FEDSYS, "server", "-c", str(server_cfg)], env)

    def client(cid: str, data: int) -> tuple[subprocess.Popen[bytes], Path]:
        cfg = write_yaml(
            tmp_path / f"client-{cid}.yaml",
            {
                "client_id": cid,
                "superlink": f"127.0.0.1:{port}",
                "root_certificates": "keys/tls/ca.pem",
                "auth_key": f"keys/clients/{cid}/node_auth",
                "signing_key": f"keys/clients/{cid}/signing.key",
                "data_path": f"data/{data}.npz",
                "partition_id": data,
                "state_dir": f"state/client-{cid}",
                "runtime_port": free_port(),
                "backoff": {"initial": 0.5, "max": 2.0},
                "refused_limit": 2,
            },
        )
        return procs.start(f"client-{cid}", [*FEDSYS, "client", "-c", str(cfg)], env)

    # Clients start once the server has registered their keys.
    wait_for(
        "node registration",
        lambda: sum(e["event"] == "node_registered" for e in events(server_out)) == 3,
        deadline,
        procs,
    )
    # The node ids the SuperLink gave the keys are written down: the ServerApp knows who
    # each node is without asking any of them.
    registered = {
        e["client_id"]: int(e["node_id"])
        for e in events(server_out)
        if e["event"] == "node_registered"
    }
    assert set(registered) == set("abc")
    assert load_roster(tmp_path / "state/server/roster.json").nodes == registered
    clients = {cid: client(cid, i) for i, cid in enumerate("abc")}
    rogue, rogue_out = client("rogue", 0)

    metrics = tmp_path / "out" / "metrics.jsonl"

    def rounds() -> list[dict[str, Any]]:
        if not metrics.exists():
            return []
        return [json.loads(line) for line in metrics.read_text().splitlines() if line]

    # Two rounds with all three clients; then a client machine dies mid-run: its daemon and
    # children are killed outright, as soon as round 2 is recorded.
    wait_for("two rounds", lambda: len(rounds()) >= 2, deadline, procs, poll=0.02)
    procs.kill_tree(*clients["c"])
    killed_after = len(rounds())
    for record in rounds()[:2]:
        assert record["clients"] == 3, record
        assert record["rejected"] == []
        # int8 over fp32: about a quarter of the bytes, plus the envelope
        assert record["compression_ratio"] < 0.4

    # The unregistered node is refused and its daemon gives up (exit code 3).
    assert rogue.wait(max(1.0, deadline - time.monotonic())) == 3
    assert any(e["event"] == "supernode_refused" for e in events(rogue_out))

    # The round in flight at the kill may still hold the lost client's reply (sent before it
    # died); the round after it completes with the two survivors.
    wait_for(
        "a round without the lost client",
        lambda: len(rounds()) >= killed_after + 2,
        deadline,
        procs,
    )
    after = rounds()[killed_after + 1]
    assert after["clients"] == 2, after
    # the lost node is either no longer sampled, or reported by Flower as unavailable
    for record in rounds()[killed_after:]:
        assert len(record["rejected"]) <= 1, record
        for rejection in record["rejected"]:
            assert "heartbeat" in rejection["reason"] or "no reply" in rejection["reason"]

    # Then the aggregation server crashes (SuperLink and ServerApp killed outright) and is
    # started again with --resume: the client daemons reconnect on their own and the run
    # continues from the last checkpoint (the last recorded round, or the one before if its
    # checkpoint was still being written).
    procs.kill_tree(server, server_out)
    crashed_at = len(rounds())
    resumed_cfg = write_yaml(
        tmp_path / "server-resume.yaml",
        {**yaml.safe_load(server_cfg.read_text()), "wait_for_nodes": 2},
    )
    server, server_out = procs.start(
        "server-resumed", [*FEDSYS, "server", "-c", str(resumed_cfg), "--resume"], env
    )
    assert server.wait(max(1.0, deadline - time.monotonic())) == 0
    statuses = [e.get("status") for e in events(server_out) if e["event"] == "run_status"]
    assert statuses[-1] == "finished:completed"
    submitted = [e for e in events(server_out) if e["event"] == "run_submitted"]
    assert submitted[-1]["resume"] is True
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rounds"] == 5
    assert summary["resumed_from_round"] in (crashed_at - 1, crashed_at)
    assert [r["round"] for r in rounds()] == [1, 2, 3, 4, 5]
    assert rounds()[4]["clients"] == 2

    # The surviving daemons stop cleanly on SIGTERM.
    for cid in "ab":
        proc, out = clients[cid]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(180) == 0
        assert events(out)[-1]["event"] == "stopped"
        # every round after the first used the warm trainer, not a fresh process
        worker_log = tmp_path / f"state/client-{cid}/logs/worker.log"
        done = [json.loads(x) for x in worker_log.read_text().splitlines() if "message_done" in x]
        assert sum(d["kind"] == "train" for d in done) >= 4

    # The final model was published, signed, to the running endpoint, which serves it.
    base = f"http://127.0.0.1:{serve_port}"
    described = wait_for(
        "the published model",
        lambda: _get(f"{base}/v1/models/deployed"),
        deadline,
        procs,
    )
    assert described is not None
    x = np.zeros((2, 40), dtype=np.float32).tolist()
    reply = httpx.post(f"{base}/v1/models/deployed:predict", json={"instances": x}, timeout=30)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert len(body["predictions"]) == 2
    assert all(0 <= p < 10 for p in body["predictions"])


def _get(url: str) -> dict[str, Any] | None:
    try:
        r = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None
