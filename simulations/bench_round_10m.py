"""Seconds per round with a 10M-parameter model: fedsys with int8 deltas against Flower's FedAvg.

The issue's target: compression must pay off in time, not only in bytes. With 10 simulated
clients, a 10M-parameter model and trivial local work, fedsys sending int8 deltas must take at
most 0.5x the seconds per round of Flower's own ``FedAvg`` (Message API) on the same clients
and model.

Three runs (a fourth on request), each a child process of this script (in its own process
group, killed whole on timeout), on Flower's Ray simulation engine with one CPU per client:

* ``plain``: ``simulations/plain_flower_mlp.py`` (Flower only, no fedsys import): FedAvg,
  the clients reply with their full float32 weights;
* ``fedsys-int8``: ``fedsys simulate`` with ``codec.quantize=int8`` (block-scaled int8 deltas,
  error feedback on, fedsys's default) and ``codec.downlink=int8`` (the global model sent
  int8-coded too);
* ``fedsys-int8-fp32-down``: int8 deltas up, the float32 model down;
* ``fedsys-fp32``: float32 both ways (``codec.quantize=none``, ``codec.downlink=none``);
* ``fedsys-int8-noef`` (only with ``--with-no-error-feedback``): int8 without error feedback.

All use the MLP ``Linear(40, H) - ReLU - Linear(H, H) - ReLU - Linear(H, 10)`` on MNIST-1D
(``H^2 + 52 H + 10`` parameters; the default H = 3137 gives 10,003,903), IID over the clients,
and one SGD step per client and round on its whole share (``batch_size = ceil(4000 /
clients)``). Both sides score the global model on the 1000 test samples after every round
(fedsys always does; ``--plain-central-eval none`` drops it on the plain side only).

A round's time is measured from outside, the same way for every run: the time between two
consecutive rounds' lines appearing in the run's metrics JSONL file (polled every 10 ms).
Round 1 includes starting the Ray workers, so the headline figures are the steady-state mean
and median over rounds 2..R; the ratio fedsys-int8 / plain of them is the issue's figure.
Peak RSS: the run's driver process (ServerApp and simulation engine; Ray's workers are
separate processes) from ``VmHWM`` in ``/proc/<pid>/status``, and a sampled peak of the RSS
summed over the driver and all its descendants (Ray's workers included; shared pages such as
Ray's object store are counted once per process that maps them).

Usage (the full measurement; on a quiet machine, it takes a few minutes)::

    FLWR_TELEMETRY_ENABLED=0 python simulations/bench_round_10m.py

``--with-no-error-feedback`` adds the int8 run without error feedback; ``--fedsys-set
KEY=VALUE`` (repeatable) appends overrides to every fedsys run; ``--batch-size`` changes
both sides' minibatch (below a client's share the plain side still takes one step while fedsys
takes a whole local epoch, so keep the default for like-for-like work). A quick end-to-end
check at small scale::

    python simulations/bench_round_10m.py --hidden 200 --rounds 3 --clients 4 --out /tmp/b.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from collections.abc import Callable
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

PLAIN_APP = ROOT / "simulations" / "plain_flower_mlp.py"
TRAIN_SAMPLES = 4000  # MNIST-1D's training set
DEFAULT_HIDDEN = 3137  # smallest H with H^2 + 52 H + 10 >= 10M
TARGET_RATIO = 0.5
METHOD = (
    "seconds per round = time between consecutive rounds' lines appearing in the run's metrics "
    "JSONL file, polled every 10 ms by this script (round 1: the run's own figure); 'steady' = "
    "rounds 2..R. reported_* = each run's own per-round 'seconds' (plain: end of one "
    "evaluate_fn call to the next; fedsys: its round loop, which excludes the checkpoint "
    "written after each round). Ratios are fedsys / plain."
)


def parameter_count(hidden: int) -> int:
    """Parameters of ``Linear(40, H) - ReLU - Linear(H, H) - ReLU - Linear(H, 10)``."""
    return 41 * hidden + (hidden + 1) * hidden + (hidden + 1) * 10


def _mean_steady(rows: list[dict[str, Any]], key: str) -> float | None:
    """Mean of ``key`` over rounds 2..R (all rounds if there is only one), skipping gaps."""
    values = [float(r[key]) for r in rows[1:] or rows if r.get(key) is not None]
    return statistics.fmean(values) if values else None


def _round_stats(rows: list[dict[str, Any]], arrivals: dict[int, float]) -> dict[str, Any]:
    """``round_stats`` plus the mean traffic per round and the final accuracy."""
    rows = sorted(rows, key=lambda r: int(r["round"]))
    return {
        **round_stats(rows, arrivals),
        "bytes_up_per_round": _mean_steady(rows, "bytes_up"),
        "bytes_down_per_round": _mean_steady(rows, "bytes_down"),
        "final_accuracy": rows[-1].get("central_accuracy"),
    }


# --------------------------------------------------------------------------------------------
# The runs
# --------------------------------------------------------------------------------------------


def run_plain(args: argparse.Namespace, work: Path, timeout: float) -> dict[str, Any]:
    report, metrics, log = work / "report.json", work / "metrics.jsonl", work / "plain.log"
    options = [
        "--hidden",
        str(args.hidden),
        "--rounds",
        str(args.rounds),
        "--num-supernodes",
        str(args.clients),
        "--batch-size",
        str(args.batch_size),
        "--central-eval",
        args.plain_central_eval,
    ]
    cmd = [sys.executable, str(PLAIN_APP), *options, "--report", str(report)]
    cmd += ["--metrics", str(metrics)]
    run, arrivals = run_watched(cmd, log, timeout, metrics, [report], track_memory=True)
    if arrivals is None:
        return run
    data = json.loads(report.read_text())
    rows = data["rounds"]
    return {
        "ok": True,
        "command": " ".join(["python", str(PLAIN_APP.relative_to(ROOT)), *options]),
        **run,
        "model_parameters": data["model_parameters"],
        "model_bytes": data["model_bytes"],
        **_round_stats(rows, arrivals),
        "mean_client_train_seconds_steady": _mean_steady(rows, "client_train_seconds"),
    }


def _fedsys_runner(
    quantize: str, error_feedback: bool = True, downlink: str = "int8"
) -> Callable[..., dict[str, Any]]:
    def run_fedsys(args: argparse.Namespace, work: Path, timeout: float) -> dict[str, Any]:
        out, log = work / "fedsys-out", work / "fedsys.log"
        overrides = [
            "model.name=mlp",
            f"model.hidden=[{args.hidden},{args.hidden}]",
            f"data.num_partitions={args.clients}",
            f"train.rounds={args.rounds}",
            "train.local_epochs=1",
            f"train.batch_size={args.batch_size}",
            f"codec.quantize={quantize}",
            f"codec.downlink={downlink}",
            "runtime.progress=false",
        ]
        if not error_feedback:
            overrides.append("codec.error_feedback=false")
        overrides += args.fedsys_set
        cli = ["simulate", *(x for item in overrides for x in ("--set", item))]
        metrics, summary_path = out / "metrics.jsonl", out / "summary.json"
        cmd = [*fedsys_command(), *cli, "--out", str(out)]
        outputs = [summary_path, metrics]
        run, arrivals = run_watched(cmd, log, timeout, metrics, outputs, track_memory=True)
        if arrivals is None:
            return run
        rows = read_jsonl(metrics)
        summary = json.loads(summary_path.read_text())
        return {
            "ok": True,
            "command": "fedsys " + " ".join(cli),
            **run,
            "model_parameters": summary.get("model_parameters"),
            **_round_stats(rows, arrivals),
            "compression_ratio": _mean_steady(rows, "compression_ratio"),
            "mean_client_train_seconds_steady": _mean_steady(rows, "client_train_seconds"),
            "mean_client_encode_seconds_steady": _mean_steady(rows, "encode_seconds"),
            "server_decode_seconds_per_round_steady": _mean_steady(rows, "decode_seconds"),
        }

    return run_fedsys


def bench(args: argparse.Namespace) -> dict[str, Any]:
    timeout = args.timeout or 240.0 + 30.0 * args.rounds
    runners: dict[str, Callable[..., dict[str, Any]]] = {
        "plain": run_plain,
        "fedsys-int8": _fedsys_runner("int8"),
        "fedsys-int8-fp32-down": _fedsys_runner("int8", downlink="none"),
        "fedsys-fp32": _fedsys_runner("none", downlink="none"),
    }
    if args.with_no_error_feedback:
        runners["fedsys-int8-noef"] = _fedsys_runner("int8", error_feedback=False)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-round-10m-") as tmp:
        for name, runner in runners.items():
            work = Path(tmp) / name
            work.mkdir()
            print(f"running {name} ...", flush=True)
            result = runner(args, work, timeout)
            if not result["ok"]:
                why = failure_reason(result, timeout)
                print(f"  {name} failed ({why}); log tail:\n{result['log_tail']}", file=sys.stderr)
            else:
                print(
                    f"  {name}: {result['wall_seconds']:.1f} s wall, "
                    f"{result['seconds_per_round_steady']:.3f} s/round steady",
                    flush=True,
                )
            results[name] = result

    report: dict[str, Any] = {
        "settings": {
            "hidden": args.hidden,
            "model_parameters": parameter_count(args.hidden),
            "rounds": args.rounds,
            "clients": args.clients,
            "batch_size": args.batch_size,
            "fedsys_extra_overrides": args.fedsys_set,
            "plain_central_eval": args.plain_central_eval,
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "timeout_seconds": timeout,
        },
        "machine": machine_info(),
        "method": METHOD,
        "runs": results,
        "target_ratio": TARGET_RATIO,
    }
    plain = results["plain"]
    ratios: dict[str, dict[str, float]] = {}
    for name, res in results.items():
        if name == "plain" or not (res["ok"] and plain["ok"]):
            continue
        ratios[name] = {
            "steady_mean": res["seconds_per_round_steady"] / plain["seconds_per_round_steady"],
            "steady_median": (
                res["median_seconds_per_round_steady"] / plain["median_seconds_per_round_steady"]
            ),
        }
    report["ratios_to_plain"] = ratios
    if "fedsys-int8" in ratios:
        report["ratio_int8_steady"] = ratios["fedsys-int8"]["steady_mean"]
        report["ratio_int8_steady_median"] = ratios["fedsys-int8"]["steady_median"]
        report["within_target"] = ratios["fedsys-int8"]["steady_mean"] <= TARGET_RATIO
    return report


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def print_table(report: dict[str, Any]) -> None:
    s, runs = report["settings"], report["runs"]
    names = list(runs)
    rows = [
        ("s/round, steady mean", "seconds_per_round_steady", "{:.3f}", 1),
        ("s/round, steady median", "median_seconds_per_round_steady", "{:.3f}", 1),
        ("own 'seconds', steady", "reported_seconds_per_round_steady", "{:.3f}", 1),
        ("round 1 s", "first_round_seconds", "{:.2f}", 1),
        ("MB up / round", "bytes_up_per_round", "{:.1f}", 1e6),
        ("MB down / round", "bytes_down_per_round", "{:.1f}", 1e6),
        ("client train s (mean)", "mean_client_train_seconds_steady", "{:.3f}", 1),
        ("client encode s (mean)", "mean_client_encode_seconds_steady", "{:.3f}", 1),
        ("server decode s / round", "server_decode_seconds_per_round_steady", "{:.3f}", 1),
        ("driver peak RSS MiB", "driver_peak_rss_mib", "{:.0f}", 1),
        ("tree peak RSS MiB (sampled)", "tree_peak_rss_mib_sampled", "{:.0f}", 1),
        ("whole command wall s", "wall_seconds", "{:.1f}", 1),
    ]
    print()
    print(
        f"H={s['hidden']} ({s['model_parameters']:,} parameters), {s['clients']} clients, "
        f"{s['rounds']} rounds, batch {s['batch_size']}"
    )
    print(f"{'':28}" + "".join(f"{n:>23}" for n in names))
    for label, key, fmt, scale in rows:
        cells = []
        for n in names:
            res = runs[n]
            value = res.get(key) if res["ok"] else None
            cells.append(
                "failed" if not res["ok"] else _cell(None if value is None else value / scale, fmt)
            )
        print(f"{label:28}" + "".join(f"{c:>23}" for c in cells))
    for name, ratio in report["ratios_to_plain"].items():
        print(
            f"ratio {name} / plain, steady s/round: mean {ratio['steady_mean']:.3f}, "
            f"median {ratio['steady_median']:.3f}"
        )
    if "within_target" in report:
        verdict = "within" if report["within_target"] else "ABOVE"
        print(f"fedsys-int8 is {verdict} the {report['target_ratio']}x target")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--hidden",
        type=int,
        default=DEFAULT_HIDDEN,
        help=f"MLP width H (default {DEFAULT_HIDDEN}: {parameter_count(DEFAULT_HIDDEN):,} params).",
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "simulations" / "results" / "bench_round_10m.json"
    )
    parser.add_argument(
        "--plain-central-eval",
        choices=("test", "none"),
        default="test",
        help="Plain side's per-round central evaluation (fedsys always evaluates; default test).",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="Both sides' minibatch (default ceil(4000 / clients): one step per client and "
        "round; a smaller batch makes fedsys take one local epoch of several steps).",
    )
    parser.add_argument(
        "--fedsys-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Extra override for every fedsys run, after the benchmark's own (repeatable).",
    )
    parser.add_argument(
        "--with-no-error-feedback",
        action="store_true",
        help="Also run fedsys with int8 and codec.error_feedback=false.",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="Seconds allowed per run (default 240 + 30 per round).",
    )
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be >= 2 (round 1 is the warm-up)")
    if not 2 <= args.clients <= TRAIN_SAMPLES:
        parser.error(f"--clients must be in 2..{TRAIN_SAMPLES}")
    if args.hidden < 1:
        parser.error("--hidden must be >= 1")
    if args.batch_size is None:
        # Every client's share fits in one batch, so one local epoch is exactly one step.
        args.batch_size = math.ceil(TRAIN_SAMPLES / args.clients)
    elif args.batch_size < 1:
        parser.error("--batch-size must be >= 1")

    report = bench(args)
    save_report(report, args.out)
    print_table(report)
    print(f"report: {args.out}")
    return 0 if all(r["ok"] for r in report["runs"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
