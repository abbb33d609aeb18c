"""Run a fedsys simulation from Python instead of the command line.

Works from any directory: the config is found beside this file, outputs go to
``runs/python-api`` under the current directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from fedsys.config import load_config
from fedsys.simulation import simulate

QUICKSTART = Path(__file__).resolve().parent.parent / "configs" / "quickstart.yaml"


def main() -> None:
    # fedsys says what it is doing (start-up stages, rounds) on the "fedsys.progress" logger
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("fedsys.progress").setLevel(logging.INFO)
    cfg = load_config(QUICKSTART, ["train.rounds=5", "runtime.progress=false"])
    out = Path("runs/python-api")
    simulate(cfg, out)
    summary = json.loads((out / "summary.json").read_text())
    print(f"accuracy after {summary['rounds']} rounds: {summary['final_accuracy']:.3f}")


if __name__ == "__main__":
    main()
