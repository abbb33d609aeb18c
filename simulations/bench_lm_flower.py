"""fedsys's federated LoRA against the same training as a plain Flower + peft app, side by side.

Both sides fine-tune the same pre-trained base (``fedsys pretrain`` on the quickstart's public
split) with LoRA r=8 on q/k/v/o, on the same clients' text (the quickstart's split by
standard-library package, written to ``client_<i>.npy`` for the plain app), the same local
steps, batch and AdamW learning rate, FedAvg over all clients and a central evaluation on the
same chunks after every round, in Flower's Ray simulation engine with one CPU per client:

* plain: ``simulations/plain_flower_lm.py`` (Flower, transformers and peft, no fedsys): full
  fp32 adapter tensors in an ArrayRecord both ways;
* fedsys: ``fedsys simulate --config configs/lm_quickstart.yaml`` (int8 adapter updates,
  encryption on, the default defence), training only (no registry, no endpoint).

Seconds per round are measured from outside (when each round's metrics line appears; round 1
includes starting Ray's workers, so the headline is the steady mean over rounds 2..R); bytes
per round are each side's own count of what crossed the wire: the plain app's ArrayRecord
payloads (the global adapter to every client and every client's adapter back), fedsys's
``bytes_up + bytes_down`` (sealed payloads). Ratios are fedsys / plain. The order of the two
sides alternates across ``--repeats``.

Usage::

    python simulations/bench_lm_flower.py --rounds 5 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
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

PLAIN_APP = ROOT / "simulations" / "plain_flower_lm.py"
CONFIG = ROOT / "configs" / "lm_quickstart.yaml"
OUT = Path(__file__).parent / "results" / "bench_lm_flower.json"
TARGET_SECONDS = 1.0
TARGET_BYTES = 0.3


def _config(base: Path | None, rounds: int, steps: int) -> Any:
    from fedsys.config import load_config

    overrides = [f"train.rounds={rounds}", f"train.max_steps={steps}", "train.local_epochs=1000"]
    overrides.append(f"lm.base={base}" if base is not None else "lm.base=null")
    return load_config(CONFIG, overrides)


def prepare(work: Path, rounds: int, steps: int) -> tuple[Path, Path, Any]:
    """Pre-train the base and write the clients' and the server's chunks for the plain app."""
    from fedsys.tasks.lm.pretrain import pretrain
    from fedsys.tasks.lm.task import LanguageModelTask

    base, data = work / "base", work / "data"
    pretrain(_config(None, rounds, steps), base)
    cfg = _config(base, rounds, steps)
    task = LanguageModelTask(cfg)
    data.mkdir()
    for pid in range(cfg.data.num_partitions):
        np.save(data / f"client_{pid}.npy", np.ascontiguousarray(task.client_data(pid).train))
    np.save(data / "central.npy", np.ascontiguousarray(task.central_data()))
    return base, data, cfg


def run_plain(cfg: Any, base: Path, data: Path, work: Path, timeout: float) -> dict[str, Any]:
    report, metrics, log = work / "plain.json", work / "plain.jsonl", work / "plain.log"
    args = [
        "--base", str(base), "--data", str(data),
        "--rounds", str(cfg.train.rounds),
        "--num-supernodes", str(cfg.data.num_partitions),
        "--steps", str(cfg.train.max_steps),
        "--batch-size", str(cfg.train.batch_size),
        "--lr", str(cfg.train.lr),
        "--rank", str(cfg.lm.lora.rank),
        "--alpha", str(cfg.lm.lora.alpha),
    ]  # fmt: skip
    cmd = [sys.executable, str(PLAIN_APP), *args, "--report", str(report)]
    cmd += ["--metrics", str(metrics)]
    run, arrivals = run_watched(cmd, log, timeout, metrics, [report])
    if arrivals is None:
        return run
    rows = json.loads(report.read_text())["rounds"]
    return {
        "ok": True,
        "command": "python simulations/plain_flower_lm.py " + " ".join(args[4:]),
        **run,
        **round_stats(rows, arrivals, all_rounds=True),
        "bytes_per_round": statistics.fmean(r["bytes"] for r in rows),
        "final_central_perplexity": rows[-1]["perplexity"],
    }


def run_fedsys(cfg: Any, base: Path, work: Path, timeout: float) -> dict[str, Any]:
    out, log = work / "fedsys-out", work / "fedsys.log"
    sets = [
        f"lm.base={base}",
        f"train.rounds={cfg.train.rounds}",
        f"train.max_steps={cfg.train.max_steps}",
        "train.local_epochs=1000",
        "runtime.progress=false",
        "publish.mode=never",  # training only, like the plain app
        "serve.enabled=false",
    ]
    args = ["simulate", "--config", str(CONFIG.relative_to(ROOT))]
    for item in sets:
        args += ["--set", item]
    cmd = [*fedsys_command(), *args, "--out", str(out)]
    metrics = out / "metrics.jsonl"
    run, arrivals = run_watched(cmd, log, timeout, metrics, [metrics, out / "summary.json"])
    if arrivals is None:
        return run
    rows = read_jsonl(metrics)
    return {
        "ok": True,
        "command": "fedsys " + " ".join(args).replace(str(base), "BASE"),
        **run,
        **round_stats(rows, arrivals, all_rounds=True),
        "bytes_per_round": statistics.fmean(
            int(r["bytes_up"]) + int(r["bytes_down"]) for r in rows
        ),
        "bytes_up_per_round": statistics.fmean(int(r["bytes_up"]) for r in rows),
        "final_central_perplexity": rows[-1].get("central_perplexity"),
        "rejected_updates": sum(len(r.get("rejected") or []) for r in rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="default: the config's")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from fedsys.config import load_config

    steps = args.steps or load_config(CONFIG, []).train.max_steps or 1
    report: dict[str, Any] = {"machine": machine_info(), "load_before": os.getloadavg()}
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "fedsys": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base, data, cfg = prepare(work, args.rounds, steps)
        report["setup"] = {
            "clients": cfg.data.num_partitions,
            "rounds": cfg.train.rounds,
            "local_steps": cfg.train.max_steps,
            "batch_size": cfg.train.batch_size,
            "lr": cfg.train.lr,
            "rank": cfg.lm.lora.rank,
            "target_modules": cfg.lm.lora.target_modules,
            "base_size": cfg.lm.size,
        }
        for repeat in range(args.repeats):
            order = ["plain", "fedsys"] if repeat % 2 == 0 else ["fedsys", "plain"]
            for side in order:
                side_dir = work / f"{side}-{repeat}"
                side_dir.mkdir()
                result = (
                    run_plain(cfg, base, data, side_dir, args.timeout)
                    if side == "plain"
                    else run_fedsys(cfg, base, side_dir, args.timeout)
                )
                if not result.get("ok"):
                    print(f"{side} failed: {failure_reason(result, args.timeout)}")
                    print(result.get("log_tail", ""))
                    report[side] = result
                    save_report(report, args.out)
                    return 1
                runs[side].append(result)
    for side, results in runs.items():
        report[side] = {
            "runs": results,
            "seconds_per_round_steady": statistics.fmean(
                r["seconds_per_round_steady"] for r in results
            ),
            "bytes_per_round": statistics.fmean(r["bytes_per_round"] for r in results),
        }
    plain, fed = report["plain"], report["fedsys"]
    report["ratio"] = {
        "seconds_per_round_steady": fed["seconds_per_round_steady"]
        / plain["seconds_per_round_steady"],
        "bytes_per_round": fed["bytes_per_round"] / plain["bytes_per_round"],
        "targets": {"seconds": TARGET_SECONDS, "bytes": TARGET_BYTES},
    }
    report["load_after"] = os.getloadavg()
    save_report(report, args.out)
    for side in ("plain", "fedsys"):
        row = report[side]
        print(
            f"{side:7s} {row['seconds_per_round_steady']:7.2f} s/round (steady)  "
            f"{row['bytes_per_round']:>10,.0f} B/round"
        )
    print(json.dumps(report["ratio"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
