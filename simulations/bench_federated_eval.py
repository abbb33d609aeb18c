"""Federated evaluation on the non-IID config: the central figure beside what the clients'
own held-out data says (weighted mean, worst client, 10th percentile).

Runs ``configs/noniid_dirichlet.yaml`` (MNIST-1D, 10 clients, Dirichlet(0.3) label skew,
FedAvg) with ``federated_eval.evaluate_every`` (default 5) and ``fraction_evaluate=1`` through
fedsys's real round loop and ClientApp in one process (``fedsys.inprocess``; the figures do not
depend on the engine). Each client holds out 20% of its partition (never trained on) for it.

    python simulations/bench_federated_eval.py --rounds 30 --every 5
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from _timing import ROOT, machine_info, save_report

CONFIG = ROOT / "configs" / "noniid_dirichlet.yaml"
RESULT = ROOT / "simulations" / "results" / "bench_federated_eval.json"
COLUMNS = (
    "round",
    "central_accuracy",
    "federated_accuracy",
    "federated_worst_accuracy",
    "federated_p10_accuracy",
    "federated_median_accuracy",
    "federated_clients",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    from fedsys.config import load_config
    from fedsys.inprocess import run_in_process
    from fedsys.server.records import read_rounds

    overrides = [
        f"train.rounds={args.rounds}",
        f"federated_eval.evaluate_every={args.every}",
        "federated_eval.fraction_evaluate=1.0",
        "publish.mode=never",
        "runtime.progress=false",
        "train.eval_overlap=false",
    ]
    cfg = load_config(CONFIG, overrides)
    with tempfile.TemporaryDirectory(prefix="bench-fedeval-") as tmp:
        run_in_process(cfg, Path(tmp) / "run", simulation=True)
        rows = read_rounds(Path(tmp) / "run" / "metrics.jsonl")
    table: list[dict[str, Any]] = [
        {c: getattr(r, c) for c in COLUMNS} for r in rows if r.federated_accuracy is not None
    ]
    report = {
        "config": str(CONFIG.relative_to(ROOT)),
        "overrides": overrides,
        "method": __doc__.split("\n\n", 1)[1].split("    python", 1)[0].strip(),
        "machine": machine_info(),
        "rounds": table,
    }
    save_report(report, args.out)
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
