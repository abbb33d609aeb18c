"""FedBuff against synchronous FedAvg when some clients are slow: simulated wall-clock time to
a target accuracy, and the final accuracy, side by side in one run.

Both sides train the quickstart model (MNIST-1D, the 1-D CNN) over ``--clients`` clients
(IID), of which ``--slow-fraction`` are ``--slow-factor`` times slower than the others
(``population.speed.distribution=two_point``: each client's speed is drawn once from the
seed). Time is simulated: each client's task lasts its slowdown times one time unit, so a
synchronous round lasts as long as its slowest sampled client, and FedBuff's server takes
replies in the order they would finish (``fedsys.fedbuff.clock``). The figures are therefore
the same on any machine; the runs go through fedsys's real round loop and ClientApp in one
process (``fedsys.inprocess``), without Ray.

* sync: FedAvg, ``--sampled`` clients per round, ``--rounds`` rounds;
* fedbuff: ``fedbuff.concurrency=--concurrency``, ``buffer_size=--buffer``, staleness weight
  1/sqrt(1+s), ``--fedbuff-rounds`` server versions (default twice sync's rounds: an
  asynchronous version costs less time, and the comparison is at a target accuracy).

Reported: accuracy against simulated time for both, the time each first reaches the target
(``--target``, default: 95% of sync's final accuracy), their ratio (fedbuff / sync), the final
accuracies, and a plot ``bench_fedbuff.png``.

    python simulations/bench_fedbuff.py --clients 100 --sampled 10 --rounds 40
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _timing import ROOT, machine_info, save_report

RESULT = ROOT / "simulations" / "results" / "bench_fedbuff.json"


def run(overrides: list[str], out: Path) -> dict[str, Any]:
    from fedsys.config import build_config
    from fedsys.inprocess import run_in_process
    from fedsys.server.records import read_rounds

    cfg = build_config({}, overrides)
    started = time.perf_counter()
    run_in_process(cfg, out, simulation=True)
    rows = read_rounds(out / "metrics.jsonl")
    return {
        "settings": overrides,
        "host_seconds": time.perf_counter() - started,
        "virtual_seconds": [r.virtual_seconds for r in rows],
        "accuracy": [r.central_accuracy for r in rows],
        "final_accuracy": rows[-1].central_accuracy,
        "updates": sum(r.clients for r in rows),
        "staleness_mean": [r.staleness_mean for r in rows],
    }


def time_to(side: dict[str, Any], target: float) -> float | None:
    for t, acc in zip(side["virtual_seconds"], side["accuracy"], strict=True):
        if acc >= target:
            return float(t)
    return None


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("sync", "fedbuff"):
        side = report[name]
        ax.plot(side["virtual_seconds"], side["accuracy"], label=name)
    ax.axhline(report["target_accuracy"], color="grey", linestyle=":", label="target")
    ax.set_xlabel("simulated wall-clock time (fast-client task units)")
    ax.set_ylabel("central accuracy")
    ax.set_title(
        f"{report['settings']['slow_fraction']:.0%} of clients "
        f"{report['settings']['slow_factor']:g}x slower"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--sampled", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--fedbuff-rounds", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--buffer", type=int, default=10)
    parser.add_argument("--slow-fraction", type=float, default=0.3)
    parser.add_argument("--slow-factor", type=float, default=10.0)
    parser.add_argument("--target", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    common = [
        "name=bench-fedbuff",
        f"data.num_partitions={args.clients}",
        f"train.local_epochs={args.local_epochs}",
        "publish.mode=never",
        "runtime.progress=false",
        f"runtime.seed={args.seed}",
        "train.eval_overlap=false",
        "defense.direction_check=false",  # not applied to one-update FedBuff arrivals
        "population.speed.distribution=two_point",
        f"population.speed.slow_fraction={args.slow_fraction}",
        f"population.speed.slow_factor={args.slow_factor}",
    ]
    sync = [
        *common,
        f"train.rounds={args.rounds}",
        f"strategy.fraction_train={args.sampled / args.clients!r}",
        f"strategy.min_train_nodes={args.sampled}",
    ]
    fedbuff = [
        *common,
        f"train.rounds={args.fedbuff_rounds or 2 * args.rounds}",
        "fedbuff.enabled=true",
        f"fedbuff.concurrency={args.concurrency}",
        f"fedbuff.buffer_size={args.buffer}",
    ]
    with tempfile.TemporaryDirectory(prefix="bench-fedbuff-") as tmp:
        print("sync ...", flush=True)
        sync_side = run(sync, Path(tmp) / "sync")
        print("fedbuff ...", flush=True)
        fedbuff_side = run(fedbuff, Path(tmp) / "fedbuff")
    target = args.target if args.target is not None else 0.95 * sync_side["final_accuracy"]
    t_sync, t_buff = time_to(sync_side, target), time_to(fedbuff_side, target)
    report: dict[str, Any] = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)},
        "method": __doc__.split("\n\n", 1)[1].split("    python", 1)[0].strip(),
        "machine": machine_info(),
        "target_accuracy": target,
        "sync": sync_side,
        "fedbuff": fedbuff_side,
        "time_to_target": {"sync": t_sync, "fedbuff": t_buff},
        "time_to_target_ratio": (t_buff / t_sync) if t_sync and t_buff else None,
        "final_accuracy_difference_points": 100
        * (fedbuff_side["final_accuracy"] - sync_side["final_accuracy"]),
    }
    save_report(report, args.out)
    plot(report, args.out.with_suffix(".png"))
    print(
        json.dumps(
            {
                k: report[k]
                for k in (
                    "target_accuracy",
                    "time_to_target",
                    "time_to_target_ratio",
                    "final_accuracy_difference_points",
                )
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
