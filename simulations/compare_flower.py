"""Time fedsys against the same training written as a plain Flower app, side by side.

Both sides train the quickstart (MNIST-1D, IID over ``--clients`` SuperNodes, the 1-D CNN,
one local epoch of SGD, FedAvg over all clients, central evaluation every round) on Flower's
Ray simulation engine with one CPU per client:

* plain: ``simulations/plain_flower_app.py`` (Flower only, no fedsys import), through
  ``flwr.simulation.run_simulation``;
* fedsys: ``fedsys simulate --config configs/quickstart.yaml``.

Each run is a child process of this script, so both sides see the same machine, the same
environment and the same process tree; the order alternates across ``--repeats`` so neither
side always runs on a colder or warmer machine. Round 1 includes starting the Ray workers
(imports, data generation), so the headline figure is the steady-state mean seconds per
round over rounds 2..R, and the ratio fedsys / plain of it. Whole-command wall time (Python
start-up, Ray start and shutdown included) is reported as well.

Flower's simulation engine moves messages by polling every 100 ms (the SuperLink's message
extractor and the in-memory Grid's pull loop), so round periods come in steps of about 0.1 s
and a few milliseconds of extra work can move a round to the next step. On a small or busy
machine, use ``--repeats 4`` or more and read the pooled figures.

Usage::

    python simulations/compare_flower.py --rounds 30 --clients 10 --repeats 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PLAIN_APP = ROOT / "simulations" / "plain_flower_app.py"
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
TARGET_RATIO = 1.1
LOG_TAIL_CHARS = 4000
POLL_SECONDS = 0.01
METHOD = (
    "seconds per round = time between consecutive rounds' lines appearing in the side's "
    "metrics JSONL file, polled every 10 ms by this script (round 1: the side's own figure); "
    "'steady' = rounds 2..R. reported_* = each side's own per-round 'seconds' (plain: end of "
    "one central evaluation to the next; fedsys: its round loop, which excludes the "
    "checkpoint written after each round). Ratios are fedsys / plain."
)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _fedsys_command() -> list[str]:
    """The ``fedsys`` console script of this interpreter's environment, else ``-m fedsys.cli``."""
    beside = Path(sys.executable).parent / "fedsys"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("fedsys")
    return [found] if found else [sys.executable, "-m", "fedsys.cli"]


class RoundWatcher:
    """Notes when each round's line appears in a JSON-lines metrics file.

    Both sides append one line per round as soon as the round is over, so the time between
    two lines appearing is the full round period as seen from outside, measured the same way
    for both: it includes whatever a side does between rounds (fedsys writes a checkpoint
    there, which its own per-round ``seconds`` does not cover).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.arrivals: dict[int, float] = {}
        self._size = -1

    def poll(self, now: float) -> None:
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        if size == self._size:
            return
        self._size = size
        for line in self.path.read_text().splitlines(keepends=True):
            if not line.endswith("\n"):
                continue
            try:
                rnd = int(json.loads(line)["round"])
            except (ValueError, KeyError, TypeError):
                continue
            self.arrivals.setdefault(rnd, now)


def _run(cmd: list[str], log_path: Path, timeout: float, watcher: RoundWatcher) -> dict[str, Any]:
    """Run ``cmd`` in its own process group, output to ``log_path``, watching its rounds.

    On timeout the whole group (Ray's raylet and workers included) is killed.
    """
    load_before = os.getloadavg()
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = start + timeout
        rc: int | None = None
        timed_out = False
        while rc is None:
            try:
                rc = proc.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                if time.perf_counter() > deadline:
                    os.killpg(proc.pid, signal.SIGKILL)
                    rc = proc.wait()
                    timed_out = True
            watcher.poll(time.perf_counter() - start)
        wall = time.perf_counter() - start
    return {
        "returncode": rc,
        "timed_out": timed_out,
        "wall_seconds": wall,
        "loadavg_1min_before": load_before[0],
        "loadavg_1min_after": os.getloadavg()[0],
    }


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return ""


def _round_stats(rows: list[dict[str, Any]], arrivals: dict[int, float]) -> dict[str, Any]:
    """Per-round figures from the observed round ends, and from the side's own ``seconds``.

    Round r's observed period is the time from round r-1's line to round r's; round 1 has no
    predecessor, so its own reported seconds stand in for it.
    """
    rows = sorted(rows, key=lambda r: int(r["round"]))
    reported = [float(r["seconds"]) for r in rows]
    rounds = [int(r["round"]) for r in rows]
    periods = [reported[0]]
    for prev, cur in itertools.pairwise(rounds):
        if prev in arrivals and cur in arrivals:
            periods.append(arrivals[cur] - arrivals[prev])
        else:  # a line the watcher did not see (only if the file was rewritten)
            periods.append(reported[rounds.index(cur)])
    steady = periods[1:]
    return {
        "rounds": len(rows),
        "seconds_per_round_steady": statistics.fmean(steady),
        "median_seconds_per_round_steady": statistics.median(steady),
        "min_seconds_per_round_steady": min(steady),
        "max_seconds_per_round_steady": max(steady),
        "seconds_per_round": statistics.fmean(periods),
        "first_round_seconds": reported[0],
        "reported_seconds_per_round_steady": statistics.fmean(reported[1:]),
        "reported_seconds_per_round": statistics.fmean(reported),
        "round_seconds": periods,
        "reported_round_seconds": reported,
    }


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_plain(rounds: int, clients: int, work: Path, timeout: float) -> dict[str, Any]:
    report, metrics, log = work / "report.json", work / "metrics.jsonl", work / "plain.log"
    cmd = [
        sys.executable,
        str(PLAIN_APP),
        "--rounds",
        str(rounds),
        "--num-supernodes",
        str(clients),
        "--report",
        str(report),
        "--metrics",
        str(metrics),
    ]
    watcher = RoundWatcher(metrics)
    run = _run(cmd, log, timeout, watcher)
    if run["returncode"] != 0 or not report.exists():
        return {"ok": False, **run, "log_tail": _tail(log)}
    data = json.loads(report.read_text())
    rows = data["rounds"]
    return {
        "ok": True,
        "command": " ".join(["python", str(PLAIN_APP.relative_to(ROOT)), *cmd[2:8]]),
        **run,
        "federation_seconds": data["server_seconds"],
        "final_accuracy": data["final_accuracy"],
        "model_parameters": data["model_parameters"],
        **_round_stats(rows, watcher.arrivals),
        "round_accuracy": [r["central_accuracy"] for r in rows],
    }


def run_fedsys(rounds: int, clients: int, work: Path, timeout: float) -> dict[str, Any]:
    out, log = work / "fedsys-out", work / "fedsys.log"
    args = [
        "simulate",
        "--config",
        str(QUICKSTART.relative_to(ROOT)),
        "--set",
        f"train.rounds={rounds}",
        "--set",
        f"data.num_partitions={clients}",
        "--set",
        "runtime.progress=false",
        "--out",
        str(out),
    ]
    metrics, summary_path = out / "metrics.jsonl", out / "summary.json"
    watcher = RoundWatcher(metrics)
    run = _run([*_fedsys_command(), *args], log, timeout, watcher)
    if run["returncode"] != 0 or not summary_path.exists() or not metrics.exists():
        return {"ok": False, **run, "log_tail": _tail(log)}
    rows = _read_jsonl(metrics)
    summary = json.loads(summary_path.read_text())
    train_secs = [
        float(r["client_train_seconds"]) for r in rows[1:] if r.get("client_train_seconds")
    ]
    return {
        "ok": True,
        "command": "fedsys " + " ".join(args[:-2]),
        **run,
        "federation_seconds": summary.get("wall_seconds"),
        "final_accuracy": summary.get("final_accuracy", rows[-1]["central_accuracy"]),
        "model_parameters": summary.get("model_parameters"),
        **_round_stats(rows, watcher.arrivals),
        "round_accuracy": [r["central_accuracy"] for r in rows],
        "mean_client_train_seconds_steady": statistics.fmean(train_secs) if train_secs else None,
    }


RUNNERS = {"plain": run_plain, "fedsys": run_fedsys}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "flwr": _version("flwr"),
        "ray": _version("ray"),
        "fedsys": _version("fedsys"),
    }


def _pooled(side_runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in side_runs if r["ok"]]
    if not ok:
        return {"ok": False}
    steady = [s for r in ok for s in r["round_seconds"][1:]]
    overall = [s for r in ok for s in r["round_seconds"]]
    reported = [s for r in ok for s in r["reported_round_seconds"][1:]]
    return {
        "ok": True,
        "runs": len(ok),
        "seconds_per_round_steady": statistics.fmean(steady),
        "median_seconds_per_round_steady": statistics.median(steady),
        "seconds_per_round": statistics.fmean(overall),
        "reported_seconds_per_round_steady": statistics.fmean(reported),
        "first_round_seconds": statistics.fmean(r["first_round_seconds"] for r in ok),
        "wall_seconds": statistics.fmean(r["wall_seconds"] for r in ok),
        "final_accuracy": statistics.fmean(r["final_accuracy"] for r in ok),
        "loadavg_1min_before": statistics.fmean(r["loadavg_1min_before"] for r in ok),
    }


def compare(args: argparse.Namespace) -> dict[str, Any]:
    timeout = args.timeout or 180.0 + 20.0 * args.rounds
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="compare-flower-") as tmp:
        for repeat in range(args.repeats):
            order = ["plain", "fedsys"] if repeat % 2 == 0 else ["fedsys", "plain"]
            entry: dict[str, Any] = {"repeat": repeat + 1, "order": order}
            for side in order:
                work = Path(tmp) / f"{side}-{repeat + 1}"
                work.mkdir()
                print(f"[repeat {repeat + 1}/{args.repeats}] running {side} ...", flush=True)
                result = RUNNERS[side](args.rounds, args.clients, work, timeout)
                if not result["ok"]:
                    why = (
                        f"timed out after {timeout:.0f} s"
                        if result["timed_out"]
                        else f"exit status {result['returncode']}"
                    )
                    print(
                        f"  {side} failed ({why}); log tail:\n{result['log_tail']}",
                        file=sys.stderr,
                        flush=True,
                    )
                else:
                    print(
                        f"  {side}: {result['wall_seconds']:.1f} s wall, "
                        f"{result['seconds_per_round_steady']:.3f} s/round steady, "
                        f"acc {result['final_accuracy']:.4f}",
                        flush=True,
                    )
                entry[side] = result
            if entry["plain"]["ok"] and entry["fedsys"]["ok"]:
                entry["ratio_steady"] = (
                    entry["fedsys"]["seconds_per_round_steady"]
                    / entry["plain"]["seconds_per_round_steady"]
                )
            runs.append(entry)

    plain = _pooled([r["plain"] for r in runs])
    fedsys = _pooled([r["fedsys"] for r in runs])
    report: dict[str, Any] = {
        "settings": {
            "rounds": args.rounds,
            "clients": args.clients,
            "repeats": args.repeats,
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "timeout_seconds": timeout,
        },
        "machine": machine_info(),
        "method": METHOD,
        "plain": plain,
        "fedsys": fedsys,
        "target_ratio": TARGET_RATIO,
        "runs": runs,
    }
    if plain["ok"] and fedsys["ok"]:
        steady = fedsys["seconds_per_round_steady"] / plain["seconds_per_round_steady"]
        report["ratio_steady"] = steady
        report["ratio_steady_median"] = (
            fedsys["median_seconds_per_round_steady"] / plain["median_seconds_per_round_steady"]
        )
        report["ratio_overall"] = fedsys["seconds_per_round"] / plain["seconds_per_round"]
        report["ratio_wall"] = fedsys["wall_seconds"] / plain["wall_seconds"]
        report["within_target"] = steady <= TARGET_RATIO
    return report


def print_table(report: dict[str, Any]) -> None:
    plain, fedsys = report["plain"], report["fedsys"]
    rows = [
        ("s/round, steady (rounds 2..R)", "seconds_per_round_steady", "{:.3f}"),
        ("s/round, steady, median", "median_seconds_per_round_steady", "{:.3f}"),
        ("s/round, all rounds", "seconds_per_round", "{:.3f}"),
        ("own 'seconds', steady", "reported_seconds_per_round_steady", "{:.3f}"),
        ("round 1 s", "first_round_seconds", "{:.2f}"),
        ("whole command wall s", "wall_seconds", "{:.1f}"),
        ("final accuracy", "final_accuracy", "{:.4f}"),
        ("1-min load average at start", "loadavg_1min_before", "{:.2f}"),
    ]
    s = report["settings"]
    print()
    print(f"{s['rounds']} rounds, {s['clients']} clients, {s['repeats']} repeat(s)")
    print(f"{'':32} {'plain Flower':>13} {'fedsys':>10}")
    for label, key, fmt in rows:
        cells = [fmt.format(side[key]) if side.get("ok") else "failed" for side in (plain, fedsys)]
        print(f"{label:32} {cells[0]:>13} {cells[1]:>10}")
    if "ratio_steady" in report:
        verdict = "within" if report["within_target"] else "ABOVE"
        print(
            f"ratio fedsys/plain, steady s/round: {report['ratio_steady']:.3f} "
            f"({verdict} the {report['target_ratio']}x target); median "
            f"{report['ratio_steady_median']:.3f}, all rounds {report['ratio_overall']:.3f}, "
            f"wall {report['ratio_wall']:.3f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "simulations" / "results" / "compare_flower.json"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="Seconds allowed per run (default 180 + 20 per round).",
    )
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (round 1 is the warm-up)")

    report = compare(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"report: {args.out}")
    return 0 if report["plain"]["ok"] and report["fedsys"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
