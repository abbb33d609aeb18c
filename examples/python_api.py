"""Run a fedsys simulation from Python instead of the command line."""

from __future__ import annotations

import json
from pathlib import Path

from fedsys.config import load_config
from fedsys.simulation import simulate


def main() -> None:
    cfg = load_config(Path("configs/quickstart.yaml"), ["train.rounds=5", "runtime.progress=false"])
    out = Path("runs/python-api")
    simulate(cfg, out)
    summary = json.loads((out / "summary.json").read_text())
    print(f"accuracy after {summary['rounds']} rounds: {summary['final_accuracy']:.3f}")


if __name__ == "__main__":
    main()
