"""Run fedsys scenarios side by side and write a JSON report (plus a comparison plot).

    python simulations/scenarios.py quickstart        # accuracy + whole-command seconds
    python simulations/scenarios.py noniid --seeds 0 1 2  # FedAvg / FedProx / FedAdam, Dir(0.3)
    python simulations/scenarios.py fedprox-synthetic # FedAvg vs FedProx(mu=1), 90% stragglers

Each variant is one ``fedsys simulate`` command in a child process, timed from the outside.
Reports go to ``simulations/results/<scenario>.json`` and ``<scenario>.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "simulations" / "results"

SCENARIOS: dict[str, tuple[str, dict[str, list[str]]]] = {
    "quickstart": ("configs/quickstart.yaml", {"fedavg": []}),
    "noniid": (
        "configs/noniid_dirichlet.yaml",
        {
            "fedavg": ["strategy.name=fedavg"],
            "fedprox(mu=0.01)": ["strategy.name=fedprox", "strategy.proximal_mu=0.01"],
            "fedprox(mu=0.1)": ["strategy.name=fedprox", "strategy.proximal_mu=0.1"],
            "fedadam(eta=0.01)": ["strategy.name=fedadam", "strategy.server_lr=0.01"],
            "fedadam(eta=0.03)": ["strategy.name=fedadam", "strategy.server_lr=0.03"],
            "fedadam(eta=0.1)": ["strategy.name=fedadam", "strategy.server_lr=0.1"],
        },
    ),
    "fedprox-synthetic": (
        "configs/fedprox_synthetic.yaml",
        {
            "fedavg (drops stragglers)": ["strategy.name=fedavg"],
            "fedprox mu=1 (keeps stragglers)": [
                "strategy.name=fedprox",
                "strategy.proximal_mu=1",
            ],
            "fedprox mu=0 (keeps stragglers)": [
                "strategy.name=fedavg",
                "strategy.drop_stragglers=false",
            ],
        },
    ),
}


def run_variant(config: str, overrides: list[str], extra: list[str], timeout: float) -> dict:
    """One ``fedsys simulate`` in a child process; its summary, rounds and outside wall time."""
    with tempfile.TemporaryDirectory(prefix="fedsys-scenario-") as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "fedsys.cli", "simulate", "--config", config]
        cmd += ["--out", str(out)]
        for item in [*overrides, "runtime.progress=false", *extra]:
            cmd += ["--set", item]
        env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
        start = time.perf_counter()
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )
        command_seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        summary = json.loads((out / "summary.json").read_text())
        rounds = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "overrides": overrides + extra,
        "command_seconds": command_seconds,
        "summary": summary,
        "accuracy": [r["central_accuracy"] for r in rounds],
        "loss": [r["central_loss"] for r in rounds],
        "clients": [r["clients"] for r in rounds],
        "seconds": [r["seconds"] for r in rounds],
    }


def plot(report: dict, path: Path) -> None:
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for label, res in report["variants"].items():
        rounds = range(1, len(res["mean_accuracy"]) + 1)
        ax_acc.plot(rounds, res["mean_accuracy"], label=label)
        ax_loss.plot(rounds, res["mean_loss"], label=label)
    ax_acc.set(xlabel="round", ylabel="central accuracy (mean over seeds)")
    ax_loss.set(xlabel="round", ylabel="central loss (mean over seeds)")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(report["scenario"])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _mean(rows: list[list[float]]) -> list[float]:
    return [statistics.fmean(col) for col in zip(*rows, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra override")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="runtime.seed values")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()

    config, variants = SCENARIOS[args.scenario]
    report: dict = {
        "scenario": args.scenario,
        "config": config,
        "seeds": args.seeds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "variants": {},
    }
    for label, overrides in variants.items():
        runs = [
            run_variant(config, overrides, [*args.extra, f"runtime.seed={seed}"], args.timeout)
            for seed in args.seeds
        ]
        finals = [r["summary"]["final_accuracy"] for r in runs]
        entry = {
            "final_accuracy_mean": statistics.fmean(finals),
            "final_accuracy_std": statistics.pstdev(finals),
            "final_accuracy": finals,
            "seconds_per_round_mean": statistics.fmean(
                r["summary"]["seconds_per_round"] for r in runs
            ),
            "command_seconds_mean": statistics.fmean(r["command_seconds"] for r in runs),
            "mean_accuracy": _mean([r["accuracy"] for r in runs]),
            "mean_loss": _mean([r["loss"] for r in runs]),
            "runs": runs,
        }
        report["variants"][label] = entry
        print(
            f"{label:34s} final acc {entry['final_accuracy_mean']:.4f} "
            f"± {entry['final_accuracy_std']:.4f} over {len(runs)} seed(s)  "
            f"{entry['seconds_per_round_mean']:.3f} s/round  "
            f"command {entry['command_seconds_mean']:.1f} s",
            flush=True,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.scenario}.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, RESULTS / f"{args.scenario}.png")
    print(f"report: {RESULTS / (args.scenario + '.json')}")


if __name__ == "__main__":
    main()
