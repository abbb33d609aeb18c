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
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from _timing import (
    ROOT,
    failure_reason,
    fedsys_command,
    machine_info,
    read_jsonl,
    round_stats,
    run_watched,
    save_report,
)

PLAIN_APP = ROOT / "simulations" / "plain_flower_app.py"
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
TARGET_RATIO = 1.1
METHOD = (
    "seconds per round = time between consecutive rounds' lines appearing in the side's "
    "metrics JSONL file, polled every 10 ms by this script (round 1: the side's own figure); "
    "'steady' = rounds 2..R. reported_* = each side's own per-round 'seconds' (plain: end of "
    "one central evaluation to the next; fedsys: its round loop, which excludes the "
    "checkpoint written after each round). Ratios are fedsys / plain."
)


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
    run, arrivals = run_watched(cmd, log, timeout, metrics, [report])
    if arrivals is None:
        return run
    data = json.loads(report.read_text())
    rows = data["rounds"]
    return {
        "ok": True,
        "command": " ".join(["python", str(PLAIN_APP.relative_to(ROOT)), *cmd[2:8]]),
        **run,
        "federation_seconds": data["server_seconds"],
        "final_accuracy": data["final_accuracy"],
        "model_parameters": data["model_parameters"],
        **round_stats(rows, arrivals, all_rounds=True),
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
        # training only, like the plain app: no registry, no endpoint
        "--set",
        "publish.mode=never",
        "--set",
        "serve.enabled=false",
        "--out",
        str(out),
    ]
    metrics, summary_path = out / "metrics.jsonl", out / "summary.json"
    cmd = [*fedsys_command(), *args]
    run, arrivals = run_watched(cmd, log, timeout, metrics, [summary_path, metrics])
    if arrivals is None:
        return run
    rows = read_jsonl(metrics)
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
        **round_stats(rows, arrivals, all_rounds=True),
        "round_accuracy": [r["central_accuracy"] for r in rows],
        "mean_client_train_seconds_steady": statistics.fmean(train_secs) if train_secs else None,
    }


RUNNERS = {"plain": run_plain, "fedsys": run_fedsys}


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
                    why = failure_reason(result, timeout)
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
    save_report(report, args.out)
    print_table(report)
    print(f"report: {args.out}")
    return 0 if report["plain"]["ok"] and report["fedsys"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
