"""Seconds per round of a deployed federation (SuperLink + SuperNodes on loopback) vs simulation.

Runs the quickstart model (MNIST-1D, 1-D CNN, FedAvg, one local epoch) with ``--clients``
clients three ways and writes ``simulations/results/bench_deploy.json``:

- ``simulated``: ``fedsys simulate`` (Flower's simulation engine, Ray);
- ``deployed_cold``: ``fedsys server`` + ``fedsys client`` daemons with ``warm_worker`` and
  ``fast_tasks`` off, so every message starts a fresh ``flwr-clientapp`` interpreter that
  imports Flower, torch and the fedsys ClientApp and rebuilds data and model (what a plain
  Flower deployment does);
- ``deployed_warm``: the same daemons with both on (the defaults): ClientApp tasks are forked
  from a pre-imported process and handed to the warm trainer over its Unix socket.

Both deployed runs use TLS and SuperNode authentication, as ``fedsys server`` does by
default. A round's time is the server's own ``seconds`` in ``metrics.jsonl`` (from sampling
to the end of central evaluation); the steady state is the mean over rounds 2..N. The report
also records where a cold round's time goes: the fixed waits in Flower's SuperNode and the
cost of starting a ``flwr-clientapp`` process with each import.

    FLWR_TELEMETRY_ENABLED=0 python simulations/bench_deploy.py --clients 5 --rounds 8
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
FEDSYS = [sys.executable, "-m", "fedsys.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        FLWR_HOME=str(work / "flwr-home"),
        FEDSYS_CACHE_DIR=str(work.parent / "cache"),
        PYTHONUNBUFFERED="1",
    )
    return env


def _rounds(metrics: Path) -> list[dict[str, Any]]:
    if not metrics.exists():
        return []
    return [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    secs = [r["seconds"] for r in rounds]
    steady = secs[1:] or secs
    return {
        "rounds": len(secs),
        "round_seconds": [round(s, 3) for s in secs],
        "first_round_seconds": round(secs[0], 3) if secs else None,
        "steady_mean_seconds": round(statistics.mean(steady), 3) if steady else None,
        "steady_median_seconds": round(statistics.median(steady), 3) if steady else None,
        "final_accuracy": rounds[-1]["central_accuracy"] if rounds else None,
        "client_train_seconds_mean": round(
            statistics.mean(r["client_train_seconds"] or 0.0 for r in rounds[1:] or rounds), 3
        )
        if rounds
        else None,
    }


def _experiment(work: Path, clients: int, rounds: int) -> Path:
    path = work / "experiment.yaml"
    cfg = {
        "name": "bench-deploy",
        "data": {"num_partitions": clients},
        "train": {"rounds": rounds, "timeout": 300},
        "strategy": {"min_available_nodes": clients, "min_train_nodes": clients},
        "runtime": {"progress": False},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_simulated(work: Path, clients: int, rounds: int, timeout: float) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    exp = _experiment(work, clients, rounds)
    out = work / "out"
    start = time.perf_counter()
    subprocess.run(
        [*FEDSYS, "simulate", "-c", str(exp), "--out", str(out)],
        env=_env(work),
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    return {**_summary(_rounds(out / "metrics.jsonl")), "wall_seconds": time.perf_counter() - start}


def _kill_group(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _child_pids(out: Path) -> list[int]:
    pids = []
    for line in out.read_text().splitlines() if out.exists() else []:
        event = json.loads(line)
        if event.get("event") == "child_started":
            pids.append(int(event["pid"]))
    return pids


def run_deployed(
    work: Path, clients: int, rounds: int, timeout: float, *, warm: bool
) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    env = _env(work)
    exp = _experiment(work, clients, rounds)
    keys = work / "keys"
    ids = [f"n{i}" for i in range(clients)]

    def fedsys(*args: str) -> None:
        subprocess.run([*FEDSYS, *args], env=env, check=True, capture_output=True, timeout=300)

    fedsys("keys", "aggregator", "--dir", str(keys))
    fedsys("keys", "client", *ids, "--dir", str(keys))
    fedsys("certs", "--dir", str(keys), "--name", "127.0.0.1")
    for i in range(clients):
        fedsys("partition", "-c", str(exp), "--partition-id", str(i), "-o", f"{work}/d{i}.npz")
    port = _free_port()
    server_yaml = work / "server.yaml"
    server_yaml.write_text(
        yaml.safe_dump(
            {
                "experiment": str(exp),
                "out_dir": str(work / "out"),
                "state_dir": str(work / "state/server"),
                "host": "127.0.0.1",
                "port": port,
                "tls": {
                    "ca_cert": str(keys / "tls/ca.pem"),
                    "cert": str(keys / "tls/server.pem"),
                    "key": str(keys / "tls/server.key"),
                },
                "node_keys": [str(keys / f"clients/{c}/node_auth.pub") for c in ids],
                "wait_for_nodes": clients,
            }
        )
    )
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        out = work / f"{name}.out"
        with out.open("wb") as fh, (work / f"{name}.err").open("wb") as err:
            proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=err, start_new_session=True)
        started.append((proc, out))
        return proc

    t0 = time.perf_counter()
    try:
        server = start("server", [*FEDSYS, "server", "-c", str(server_yaml)])
        for i, cid in enumerate(ids):
            cfg = work / f"client-{cid}.yaml"
            cfg.write_text(
                yaml.safe_dump(
                    {
                        "client_id": cid,
                        "superlink": f"127.0.0.1:{port}",
                        "root_certificates": str(keys / "tls/ca.pem"),
                        "auth_key": str(keys / f"clients/{cid}/node_auth"),
                        "signing_key": str(keys / f"clients/{cid}/signing.key"),
                        "data_path": f"{work}/d{i}.npz",
                        "partition_id": i,  # seeds local training as in the simulation
                        "state_dir": str(work / f"state/{cid}"),
                        "runtime_port": _free_port(),
                        "warm_worker": warm,
                        "fast_tasks": warm,
                        "refused_limit": 20,
                        "backoff": {"initial": 0.5, "max": 2.0},
                    }
                )
            )
            start(f"client-{cid}", [*FEDSYS, "client", "-c", str(cfg)])
        code = server.wait(timeout)
        if code != 0:
            raise RuntimeError(f"fedsys server exited with {code}; see {work}/server.out")
    finally:
        for proc, out in reversed(started):
            _kill_group(proc)
            for pid in _child_pids(out):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
    return {
        **_summary(_rounds(work / "out" / "metrics.jsonl")),
        "wall_seconds": time.perf_counter() - t0,
    }


def _import_seconds(module: str, repeats: int = 3) -> float:
    """Wall time of a fresh interpreter importing ``module`` (median of ``repeats``)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 3)


def breakdown() -> dict[str, Any]:
    """Where a deployed round's time goes besides training (see the module docstring)."""
    from flwr.supercore.superexec import run_superexec

    return {
        "supernode_idle_poll_seconds": 3.0,  # flwr/supernode/start_client_internal.py
        "supernode_reply_poll_seconds": 0.5,
        "superexec_task_poll_seconds_default": run_superexec._DEFAULT_TASK_POLL_INTERVAL_SECONDS,
        "superexec_task_poll_seconds_fedsys": 0.1,
        "process_start_python": _import_seconds("sys"),
        "process_start_flwr_clientapp_runtime": _import_seconds(
            "flwr.supernode.cli.flwr_clientapp"
        ),
        "import_thin_clientapp": _import_seconds("fedsys.client.deployed_app"),
        "import_fedsys_clientapp": _import_seconds("fedsys.client.client_app"),
        "import_fedsys_app_both_apps": _import_seconds("fedsys.app"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument(
        "--only", choices=["simulated", "deployed_cold", "deployed_warm"], action="append"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "simulations/results/bench_deploy.json")
    args = parser.parse_args()
    which = args.only or ["simulated", "deployed_cold", "deployed_warm"]
    # --only refreshes some rows of an existing report (same clients and rounds) in place.
    previous = json.loads(args.out.read_text()) if args.only and args.out.exists() else {}
    if previous and (previous["clients"], previous["rounds"]) != (args.clients, args.rounds):
        previous = {}
    report: dict[str, Any] = {
        **previous,
        "clients": args.clients,
        "rounds": args.rounds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "reference_plain_flower_deployed_seconds_per_round": 20.1,
    }
    with tempfile.TemporaryDirectory(prefix="fedsys-bench-deploy-") as tmp:
        work = Path(tmp)
        for name in which:
            print(f"running {name} ...", flush=True)
            if name == "simulated":
                report[name] = run_simulated(work / name, args.clients, args.rounds, args.timeout)
            else:
                report[name] = run_deployed(
                    work / name,
                    args.clients,
                    args.rounds,
                    args.timeout,
                    warm=name == "deployed_warm",
                )
            print(json.dumps(report[name]), flush=True)
    report["breakdown"] = breakdown()
    warm = report.get("deployed_warm", {}).get("steady_mean_seconds")
    if warm:
        report["warm_over_plain_reference"] = round(warm / 20.1, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
