"""Cross-device scale: start-up and seconds per round against the population, fedsys beside a
plain Flower app, in one run.

For each population N (``--populations``) and each number of clients sampled per round
(``--sampled``), both sides train a softmax regression on per-client Synthetic data for
``--rounds`` rounds, sampling that many of the N clients each round, on Flower's Ray simulation
engine with one CPU per client:

* plain: ``simulations/plain_flower_scale.py`` (Flower's FedAvg with ``fraction_train = k/N``);
* fedsys: ``fedsys simulate`` with ``data.name=synthetic``, ``data.partitioner=natural``,
  ``data.synthetic_devices=N``, ``model.name=logreg`` and ``strategy.fraction_train = k/N``.

Figures per run (each a child process, killed whole on timeout):

* ``startup_seconds``: from launching the command until round 1's line appears in the side's
  metrics file, less one steady round (the median of rounds 2..R): Python, Ray and the
  workers starting, data, and whatever a side does before it can train (fedsys's start-up
  hello, where there is one);
* ``seconds_per_round_steady``: mean time between consecutive rounds' lines, rounds 2..R;
* ``driver_peak_rss_mib`` / ``tree_peak_rss_mib_sampled``: peak memory of the driver process
  and of its whole process tree (Ray's workers included).

Ratios are fedsys / plain, and fedsys at N / fedsys at the smallest N.

Usage::

    python simulations/bench_scale.py --populations 10 100 1000 --sampled 10 --rounds 5
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

PLAIN_APP = ROOT / "simulations" / "plain_flower_scale.py"
RESULT = ROOT / "simulations" / "results" / "bench_scale.json"


def _figures(rows: list[dict[str, Any]], arrivals: dict[int, float]) -> dict[str, Any]:
    stats = round_stats(rows, arrivals)
    first = min(int(r["round"]) for r in rows)
    startup = arrivals.get(first, float("nan")) - stats["median_seconds_per_round_steady"]
    return {
        "startup_seconds": startup,
        "seconds_per_round_steady": stats["seconds_per_round_steady"],
        "median_seconds_per_round_steady": stats["median_seconds_per_round_steady"],
        "first_round_seconds": stats["first_round_seconds"],
        "rounds": stats["rounds"],
        "final_accuracy": rows[-1].get("central_accuracy"),
    }


def run_plain(n: int, k: int, rounds: int, work: Path, timeout: float) -> dict[str, Any]:
    report, metrics = work / "report.json", work / "metrics.jsonl"
    cmd = [
        sys.executable,
        str(PLAIN_APP),
        *("--rounds", str(rounds), "--num-supernodes", str(n), "--sampled", str(k)),
        *("--report", str(report), "--metrics", str(metrics)),
    ]
    run, arrivals = run_watched(cmd, work / "plain.log", timeout, metrics, [report], True)
    if arrivals is None:
        return run
    return {"ok": True, **run, **_figures(read_jsonl(metrics), arrivals)}


def fedsys_settings(
    n: int, k: int, rounds: int, extra: list[str], uncapped: bool = False
) -> list[str]:
    settings = [
        f"name=scale-{n}",
        f"train.rounds={rounds}",
        "data.name=synthetic",
        "data.partitioner=natural",
        f"data.num_partitions={n}",
        f"data.synthetic_devices={n}",
        "model.name=logreg",
        "train.lr=0.05",
        "train.batch_size=10",
        # the same work per client as the plain app: ~50 samples, 5 local steps
        *([] if uncapped else ["data.synthetic_max_samples=60", "data.synthetic_test_devices=100"]),
        "train.max_steps=5",
        f"strategy.fraction_train={k / n!r}",
        f"strategy.min_train_nodes={k}",
        f"strategy.min_available_nodes={k}",
        "runtime.progress=false",
        *extra,
    ]
    return settings


def run_fedsys(
    n: int, k: int, rounds: int, work: Path, timeout: float, extra: list[str], uncapped: bool
) -> dict[str, Any]:
    out = work / "fedsys-out"
    args = ["simulate", "--out", str(out)]
    for setting in fedsys_settings(n, k, rounds, extra, uncapped):
        args += ["--set", setting]
    metrics, summary = out / "metrics.jsonl", out / "summary.json"
    run, arrivals = run_watched(
        [*fedsys_command(), *args], work / "fedsys.log", timeout, metrics, [summary], True
    )
    if arrivals is None:
        return run
    rows = read_jsonl(metrics)
    return {
        "ok": True,
        **run,
        **_figures(rows, arrivals),
        "rejected": sum(len(r.get("rejected", [])) for r in rows),
        "rejected_reasons": _reasons(rows),
        "model_tensors_sha256": _sha256(out / "model.safetensors"),
    }


def _reasons(rows: list[dict[str, Any]]) -> dict[str, int]:
    """How many updates were rejected for each reason (its text up to the first '(')."""
    counts: dict[str, int] = {}
    for row in rows:
        for rejection in row.get("rejected", []):
            reason = str(rejection.get("reason", "")).split("(")[0].strip()
            counts[reason] = counts.get(reason, 0) + 1
    return counts


def _sha256(path: Path) -> str | None:
    """SHA-256 over the model's tensors (names sorted, then each tensor's bytes): equal for
    equal weights whatever the file's header order."""
    import hashlib

    from safetensors.numpy import load_file

    try:
        tensors = load_file(path)
    except OSError:
        return None
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].tobytes())
    return digest.hexdigest()


def _ratio(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    if a.get("ok") and b.get("ok") and b.get(key):
        return float(a[key]) / float(b[key])
    return None


def bench(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        for rep, k, n in (
            (rep, k, n)
            for rep in range(args.repeats)
            for k in args.sampled
            for n in args.populations
        ):
            if k <= n:
                entry: dict[str, Any] = {"population": n, "sampled": k, "repeat": rep}
                for side in args.sides:
                    work = Path(tmp) / f"{side}-{n}-{k}-{rep}"
                    work.mkdir()
                    print(f"[N={n} k={k} repeat {rep + 1}] {side} ...", flush=True)
                    if side == "plain":
                        result = run_plain(n, k, args.rounds, work, args.timeout)
                    else:
                        result = run_fedsys(
                            n, k, args.rounds, work, args.timeout, args.set, args.uncapped
                        )
                    if result["ok"]:
                        print(
                            f"  start-up {result['startup_seconds']:.1f} s, "
                            f"{result['seconds_per_round_steady']:.3f} s/round, driver "
                            f"{result['driver_peak_rss_mib']:.0f} MiB, tree "
                            f"{result['tree_peak_rss_mib_sampled']:.0f} MiB",
                            flush=True,
                        )
                    else:
                        why = failure_reason(result, args.timeout)
                        print(f"  failed ({why}):\n{result['log_tail']}", file=sys.stderr)
                    entry[side] = result
                if "plain" in entry and "fedsys" in entry:
                    entry["ratio_startup"] = _ratio(
                        entry["fedsys"], entry["plain"], "startup_seconds"
                    )
                    entry["ratio_seconds_per_round"] = _ratio(
                        entry["fedsys"], entry["plain"], "seconds_per_round_steady"
                    )
                runs.append(entry)
    return {
        "settings": {
            "populations": args.populations,
            "sampled": args.sampled,
            "rounds": args.rounds,
            "fedsys_extra_settings": args.set,
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "repeats": args.repeats,
        },
        "method": __doc__.split("Figures per run", 1)[1].split("Usage::", 1)[0].strip(),
        "machine": machine_info(),
        "runs": runs,
        "medians": _medians(runs),
        "fedsys_vs_smallest": _against_smallest(_medians(runs)),
    }


FIGURES = (
    "startup_seconds",
    "seconds_per_round_steady",
    "driver_peak_rss_mib",
    "tree_peak_rss_mib_sampled",
)


def _medians(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per population, sample size and side: the median of each figure over the repeats,
    with its smallest and largest value (start-up moves most on a shared machine)."""
    out = []
    for n, k in sorted({(r["population"], r["sampled"]) for r in runs}):
        entry: dict[str, Any] = {"population": n, "sampled": k}
        for side in ("plain", "fedsys"):
            ok = [
                r[side]
                for r in runs
                if (r["population"], r["sampled"]) == (n, k) and r.get(side, {}).get("ok")
            ]
            if not ok:
                continue
            entry[side] = {"ok": True, "runs": len(ok)}
            for key in FIGURES:
                values = [float(o[key]) for o in ok]
                entry[side][key] = statistics.median(values)
                entry[side][f"{key}_min"] = min(values)
                entry[side][f"{key}_max"] = max(values)
        if "plain" in entry and "fedsys" in entry:
            entry["ratio_startup"] = _ratio(entry["fedsys"], entry["plain"], "startup_seconds")
            entry["ratio_seconds_per_round"] = _ratio(
                entry["fedsys"], entry["plain"], "seconds_per_round_steady"
            )
        out.append(entry)
    return out


def _against_smallest(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """fedsys at each population against fedsys at the smallest one (same sample size)."""
    rows = []
    for k in sorted({r["sampled"] for r in runs}):
        same = [r for r in runs if r["sampled"] == k and r.get("fedsys", {}).get("ok")]
        if not same:
            continue
        base = min(same, key=lambda r: r["population"])["fedsys"]
        for r in same:
            f = r["fedsys"]
            rows.append(
                {
                    "population": r["population"],
                    "sampled": k,
                    "startup_ratio": _ratio(f, base, "startup_seconds"),
                    "seconds_per_round_ratio": _ratio(f, base, "seconds_per_round_steady"),
                    "driver_rss_delta_mib": f["driver_peak_rss_mib"] - base["driver_peak_rss_mib"],
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--populations", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--sampled", type=int, nargs="+", default=[10])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--repeats", type=int, default=1, help="Run every population this many times (medians)."
    )
    parser.add_argument("--sides", nargs="+", default=["plain", "fedsys"])
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--set", action="append", default=[], help="Extra fedsys setting.")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument(
        "--uncapped",
        action="store_true",
        help="Leave Synthetic's device sizes uncut (for fedsys versions without "
        "data.synthetic_max_samples).",
    )
    args = parser.parse_args()
    report = bench(args)
    save_report(report, args.out)
    print(json.dumps(report["fedsys_vs_smallest"], indent=2))
    for m in report["medians"]:
        for side in ("plain", "fedsys"):
            if side in m:
                f = m[side]
                print(
                    f"N={m['population']} k={m['sampled']} {side}: start-up "
                    f"{f['startup_seconds']:.1f} s ({f['startup_seconds_min']:.1f}-"
                    f"{f['startup_seconds_max']:.1f}), {f['seconds_per_round_steady']:.3f} s/round "
                    f"({f['seconds_per_round_steady_min']:.3f}-"
                    f"{f['seconds_per_round_steady_max']:.3f}), runs {f['runs']}"
                )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
