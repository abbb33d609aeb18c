"""Deployment faults on loopback, TLS and node authentication on, int8 + encrypted updates,
every round published: the SuperLink SIGKILLed mid-run, the server daemon's process group
SIGKILLed and restarted with ``--resume``, the whole server tree SIGKILLed and restarted, and
one client frozen for longer than ``train.timeout``.

The three client daemons are shared by the module (they ride out every server fault); each
test starts its own server on the shared state directory with a fresh output directory.
Every run must end with each round in ``metrics.jsonl`` exactly once and in order, a
``summary.json`` that agrees with it, one writer, and registry versions that match the
rounds; after the daemons stop nothing of theirs may be left running. The seconds from each
kill to the next completed round are printed (and appended as JSON lines to the file named
by ``FEDSYS_FAULT_REPORT``, when set).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deployment import FEDSYS, Procs, events, free_port, marked, wait_for, write_yaml

from fedsys.deploy.lifetime import marked_processes

pytestmark = pytest.mark.deployment

# A guard against a hung scenario, never a figure under test: a scenario takes about a
# minute here and several on a slow single-core runner.
TEST_DEADLINE = 900.0
ROUNDS = 4
FREEZE_ROUNDS = 7  # room for the frozen client to come back however slowly rounds run


@dataclass
class Fleet:
    root: Path
    procs: Procs
    env: dict[str, str]
    port: int
    server_state: Path
    clients: dict[str, tuple[subprocess.Popen[bytes], Path]] = field(default_factory=dict)
    client_states: list[Path] = field(default_factory=list)
    servers: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def experiment(self, name: str, timeout: float, rounds: int) -> Path:
        return write_yaml(
            self.root / f"experiment-{name}.yaml",
            {
                "name": "faults",
                "data": {"num_partitions": 3},
                "model": {"channels": 8},
                "train": {"rounds": rounds, "max_steps": 5, "timeout": timeout},
                "strategy": {"min_available_nodes": 3, "min_train_nodes": 2},
                "codec": {"quantize": "int8", "encrypt": True},
                "publish": {"mode": "every_round"},
                "runtime": {"progress": False},
            },
        )

    def server_settings(self, name: str, timeout: float = 30.0, rounds: int = ROUNDS) -> Path:
        keys = self.root / "keys"
        return write_yaml(
            self.root / f"server-{name}.yaml",
            {
                "experiment": str(self.experiment(name, timeout, rounds)),
                "out_dir": str(self.root / f"out-{name}"),
                "state_dir": str(self.server_state),
                "host": "127.0.0.1",
                "port": self.port,
                "tls": {
                    "ca_cert": str(keys / "tls/ca.pem"),
                    "cert": str(keys / "tls/server.pem"),
                    "key": str(keys / "tls/server.key"),
                },
                "node_keys": [str(keys / f"clients/{c}/node_auth.pub") for c in "abc"],
                "update_key": str(keys / "aggregator/update.key"),
                "allow_list": str(keys / "aggregator/allow_list.json"),
                "publish_key": str(keys / "aggregator/publish.key"),
                "wait_for_nodes": 3,
                "backoff": {"initial": 0.5, "max": 4.0},
            },
        )

    def start_server(
        self, settings: Path, label: str, *, resume: bool = False
    ) -> tuple[subprocess.Popen[bytes], Path]:
        argv = [*FEDSYS, "server", "-c", str(settings), *(["--resume"] if resume else [])]
        server = self.procs.start(label, argv, self.env)
        self.servers.append(server)
        if not self.clients:
            deadline = time.monotonic() + TEST_DEADLINE
            wait_for(
                "node registration",
                lambda: any(e["event"] == "nodes_online" for e in events(server[1])),
                deadline,
                self.procs,
            )
            for i, cid in enumerate("abc"):
                self.clients[cid] = self._client(cid, i)
        return server

    def _client(self, cid: str, data: int) -> tuple[subprocess.Popen[bytes], Path]:
        keys = self.root / "keys"
        state = self.root / f"state/client-{cid}"
        self.client_states.append(state)
        cfg = write_yaml(
            self.root / f"client-{cid}.yaml",
            {
                "client_id": cid,
                "superlink": f"127.0.0.1:{self.port}",
                "root_certificates": str(keys / "tls/ca.pem"),
                "auth_key": str(keys / f"clients/{cid}/node_auth"),
                "signing_key": str(keys / f"clients/{cid}/signing.key"),
                "data_path": str(self.root / f"data/{data}.npz"),
                "partition_id": data,
                "state_dir": str(state),
                "runtime_port": free_port(),
                "backoff": {"initial": 0.5, "max": 2.0},
            },
        )
        return self.procs.start(f"client-{cid}", [*FEDSYS, "client", "-c", str(cfg)], self.env)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("faults")
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"

    def run(*args: str) -> None:
        subprocess.run([*FEDSYS, *args], env=env, cwd=root, check=True, capture_output=True)

    keys = root / "keys"
    run("keys", "aggregator", "--dir", str(keys))
    run("keys", "client", "a", "b", "c", "--dir", str(keys))
    run("certs", "--dir", str(keys), "--name", "localhost", "--name", "127.0.0.1")
    exp = root / "partition.yaml"
    exp.write_text(yaml.safe_dump({"data": {"num_partitions": 3}}))
    for i in range(3):
        run("partition", "-c", str(exp), "--partition-id", str(i), "-o", f"data/{i}.npz")
    procs = Procs(root)
    fleet = Fleet(root, procs, env, free_port(), root / "state/server")
    try:
        yield fleet
    finally:
        procs.stop_all()


@pytest.fixture(autouse=True)
def no_server_outlives_its_test(fleet: Fleet) -> Iterator[None]:
    """A scenario that fails leaves no server behind to hold the port and state directory
    the next scenario needs (the module's client daemons stay up)."""
    yield
    for proc, out in fleet.servers:
        if proc.poll() is None:
            fleet.procs.kill_tree(proc, out)
    fleet.servers.clear()


def rounds(out: Path) -> list[dict[str, Any]]:
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_round(out: Path) -> int:
    return max((r["round"] for r in rounds(out)), default=0)


def report(fault: str, seconds: float, command: str) -> None:
    line = {"fault": fault, "kill_to_next_round_s": round(seconds, 1), "command": command}
    print(json.dumps(line))
    if path := os.environ.get("FEDSYS_FAULT_REPORT"):
        with open(path, "a") as fh:
            fh.write(json.dumps(line) + "\n")


def recovery(out: Path, at_kill: int, killed: float, deadline: float, procs: Procs) -> float:
    """Seconds from ``killed`` until a round after ``at_kill`` is recorded."""
    wait_for("the next completed round", lambda: last_round(out) > at_kill, deadline, procs)
    return time.monotonic() - killed


def check_run(out: Path, server_out: Path, expected_rounds: int = ROUNDS) -> None:
    """All rounds once and in order, a consistent summary, one writer, matching versions."""
    records = rounds(out)
    assert [r["round"] for r in records] == list(range(1, expected_rounds + 1))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == expected_rounds
    assert summary["final_accuracy"] == records[-1]["central_accuracy"]
    assert summary["updates_total"] == sum(r["clients"] for r in records)
    # one writer: the lock names the run the daemon submitted last, and nothing else runs
    holder = json.loads((out / ".writer.lock").read_text())
    submitted = [e for e in events(server_out) if e["event"] == "run_submitted"]
    assert holder["run_id"] == str(submitted[-1]["run_id"])
    # the registry holds exactly the versions the lines name, each with its line's round
    manifests = {}
    vdir = out / "registry/faults/versions"
    for d in vdir.iterdir():
        if d.name.isdigit():
            manifests[int(d.name)] = json.loads((d / "manifest.json").read_text())["round"]
    named = {r["published_version"]: r["round"] for r in records if r["published_version"]}
    assert named == manifests, (named, manifests)
    for r in records:
        assert r["published_version"] is not None or r.get("publish_gap"), r
    versions = [r["published_version"] for r in records if r["published_version"]]
    assert versions == sorted(versions)
    assert summary["published_version"] == max(manifests)


def server_leftovers(fleet: Fleet) -> list[str]:
    return [f"{p.pid}:{p.name}" for p in marked_processes(fleet.server_state)]


def kill_leftovers(fleet: Fleet) -> list[str]:
    """SIGKILL whatever of the server's processes is still alive; the ones that were."""
    alive = marked_processes(fleet.server_state)
    for p in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGKILL)
    return [f"{p.pid}:{p.name}" for p in alive]


def finish(fleet: Fleet, server: subprocess.Popen[bytes], deadline: float) -> None:
    assert server.wait(max(1.0, deadline - time.monotonic())) == 0
    assert server_leftovers(fleet) == []


def test_superlink_sigkilled_is_restarted_and_the_run_resumes(fleet: Fleet) -> None:
    deadline = time.monotonic() + TEST_DEADLINE
    server, server_out = fleet.start_server(fleet.server_settings("superlink"), "server-sl")
    out = fleet.root / "out-superlink"
    wait_for("two rounds", lambda: last_round(out) >= 2, deadline, fleet.procs, poll=0.05)
    superlink = next(
        e["pid"] for e in events(server_out) if e.get("child") == "superlink" and "pid" in e
    )
    at_kill, killed = last_round(out), time.monotonic()
    os.kill(superlink, signal.SIGKILL)
    seconds = recovery(out, at_kill, killed, deadline, fleet.procs)
    report("SuperLink SIGKILLed", seconds, "kill -9 <flower-superlink pid>")
    finish(fleet, server, deadline)
    kinds = [e["event"] for e in events(server_out)]
    assert "superlink_restarted" in kinds and "giving_up" not in kinds
    resumed = [e["resume"] for e in events(server_out) if e["event"] == "run_submitted"]
    assert resumed == [False, True]
    check_run(out, server_out)
    assert json.loads((out / "summary.json").read_text())["resumed_from_round"] >= 1
    # every client logged the loss and the return of the SuperLink, with the time it was gone
    for cid, (_, client_out) in fleet.clients.items():
        back = [e for e in events(client_out) if e["event"] == "superlink_regained"]
        assert back and back[-1]["down_s"] > 0, cid


def test_server_process_group_sigkilled_and_resumed(fleet: Fleet) -> None:
    deadline = time.monotonic() + TEST_DEADLINE
    settings = fleet.server_settings("group")
    server, server_out = fleet.start_server(settings, "server-group")
    out = fleet.root / "out-group"
    wait_for("two rounds", lambda: last_round(out) >= 2, deadline, fleet.procs, poll=0.05)
    at_kill, killed = last_round(out), time.monotonic()
    os.killpg(server.pid, signal.SIGKILL)  # the daemon's group only, as an operator might
    server.wait(10)
    # restarted at once: whatever the dead daemon left is stopped, never attached to
    server, server_out = fleet.start_server(settings, "server-group-2", resume=True)
    seconds = recovery(out, at_kill, killed, deadline, fleet.procs)
    report(
        "server process group SIGKILLed, restarted with --resume",
        seconds,
        "kill -9 -<fedsys server pgid>; fedsys server --resume",
    )
    finish(fleet, server, deadline)
    kinds = [e["event"] for e in events(server_out)]
    assert kinds.index("child_started") < kinds.index("superlink_reachable")
    check_run(out, server_out)


def test_server_tree_sigkilled_and_resumed(fleet: Fleet) -> None:
    deadline = time.monotonic() + TEST_DEADLINE
    settings = fleet.server_settings("tree")
    server, server_out = fleet.start_server(settings, "server-tree")
    out = fleet.root / "out-tree"
    wait_for("two rounds", lambda: last_round(out) >= 2, deadline, fleet.procs, poll=0.05)
    at_kill, killed = last_round(out), time.monotonic()
    fleet.procs.kill_tree(server, server_out)  # the machine's view: everything at once
    # a SIGKILLed process lingers in /proc until the kernel has torn it down (longer on a
    # loaded machine), and one forked in the instant of the kill escapes the first sweep
    wait_for("the killed tree to be gone", lambda: not kill_leftovers(fleet), deadline, fleet.procs)
    server, server_out = fleet.start_server(settings, "server-tree-2", resume=True)
    seconds = recovery(out, at_kill, killed, deadline, fleet.procs)
    report(
        "whole server tree SIGKILLed, restarted with --resume",
        seconds,
        "kill -9 <every server process>; fedsys server --resume",
    )
    finish(fleet, server, deadline)
    check_run(out, server_out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_round"] in (at_kill - 1, at_kill)


def test_client_frozen_longer_than_train_timeout_rejoins(fleet: Fleet) -> None:
    deadline = time.monotonic() + TEST_DEADLINE
    timeout = 8.0
    settings = fleet.server_settings("freeze", timeout, rounds=FREEZE_ROUNDS)
    server, server_out = fleet.start_server(settings, "server-fz")
    out = fleet.root / "out-freeze"
    wait_for("two rounds", lambda: last_round(out) >= 2, deadline, fleet.procs, poll=0.05)
    _, c_out = fleet.clients["c"]
    frozen = marked(str(c_out))
    at_kill, killed = last_round(out), time.monotonic()
    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(timeout + 5.0)
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    seconds = recovery(out, at_kill, killed, deadline, fleet.procs)
    report(
        f"one client frozen {timeout + 5:.0f} s (train.timeout {timeout:.0f} s)",
        seconds,
        "kill -STOP <client processes>; sleep; kill -CONT",
    )
    finish(fleet, server, deadline)
    check_run(out, server_out, FREEZE_ROUNDS)
    records = rounds(out)
    # a round went on without the frozen client, and it took part again afterwards
    without = [i for i, r in enumerate(records) if i >= at_kill and r["clients"] == 2]
    assert without, records
    assert any(r["clients"] == 3 for r in records[without[0] + 1 :]), records


def test_nothing_is_left_running_after_the_daemons_stop(fleet: Fleet) -> None:
    if not fleet.clients:
        pytest.skip("no client daemons were started")
    for cid, (proc, out) in fleet.clients.items():
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(180) == 0, cid
        assert events(out)[-1]["event"] == "stopped"
    for state in [fleet.server_state, *fleet.client_states]:
        assert marked_processes(state) == []
    for _, out in fleet.procs.started:
        assert marked(str(out)) == []
