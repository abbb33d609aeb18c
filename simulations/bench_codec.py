"""Update-codec benchmark on the quickstart: bytes per update, accuracy, encryption overhead.

    python simulations/bench_codec.py [--rounds 30] [--repeats 2]

Every variant is the quickstart (same seed, same rounds) with one codec setting changed, run
as its own ``fedsys simulate`` child process. Bytes per update = ``bytes_up_total`` / updates
received. Targets (the issue's): int8 <= 0.26x + 512 B with accuracy within 0.5 points of the
uncompressed run, int4 <= 0.14x + 512 B within 1.5 points, top-k 10% + int8 <= 0.05x + 512 B,
and ``codec.encrypt=true`` adding <= 3% to the wall time (compared on median seconds per round
over alternating repeats, since single runs vary by more than 3% on a shared machine).
Codec-only ratios on models of 1M+ parameters are in ``bench_codec_micro.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "simulations" / "results"
ALLOWANCE = 512

VARIANTS: dict[str, list[str]] = {
    "none": [],
    "fp16": ["codec.quantize=fp16"],
    "int8": ["codec.quantize=int8"],
    "int4": ["codec.quantize=int4"],
    "topk10+int8": ["codec.topk=0.1", "codec.quantize=int8"],
}
TARGETS = {"int8": (0.26, 0.5), "int4": (0.14, 1.5), "topk10+int8": (0.05, None)}


def run(overrides: list[str], rounds: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="fedsys-bench-codec-") as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "fedsys.cli", "simulate", "--config"]
        cmd += ["configs/quickstart.yaml", "--out", str(out)]
        no_serving = ["publish.mode=never", "serve.enabled=false"]  # bytes and accuracy only
        for item in [f"train.rounds={rounds}", "runtime.progress=false", *no_serving, *overrides]:
            cmd += ["--set", item]
        env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        summary = json.loads((out / "summary.json").read_text())
        rounds_ = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steady = [r["seconds"] for r in rounds_[1:]]
    return {
        "overrides": overrides,
        "command_seconds": wall,
        "final_accuracy": summary["final_accuracy"],
        "bytes_per_update": summary["bytes_up_total"] / max(summary["updates_total"], 1),
        "median_round_seconds": statistics.median(steady) if steady else None,
        "mean_encode_seconds": statistics.fmean(r["encode_seconds"] or 0.0 for r in rounds_),
        "mean_decode_seconds": statistics.fmean(r["decode_seconds"] for r in rounds_),
        "rejected": sum(len(r["rejected"]) for r in rounds_),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2, help="for the encryption overhead")
    args = parser.parse_args()

    report: dict = {"rounds": args.rounds, "variants": {}, "encryption": {}}
    for label, overrides in VARIANTS.items():
        report["variants"][label] = res = run(overrides, args.rounds)
        print(
            f"{label:12s} {res['bytes_per_update']:10.0f} B/update  "
            f"acc {res['final_accuracy']:.4f}  encode {res['mean_encode_seconds'] * 1e3:6.1f} ms  "
            f"decode/round {res['mean_decode_seconds'] * 1e3:6.1f} ms",
            flush=True,
        )
    base = report["variants"]["none"]
    for label, (ratio, points) in TARGETS.items():
        res = report["variants"][label]
        limit = ratio * base["bytes_per_update"] + ALLOWANCE
        res["ratio"] = res["bytes_per_update"] / base["bytes_per_update"]
        res["limit_bytes"] = limit
        res["bytes_ok"] = res["bytes_per_update"] <= limit
        res["accuracy_delta_points"] = 100 * (res["final_accuracy"] - base["final_accuracy"])
        res["accuracy_ok"] = None if points is None else res["accuracy_delta_points"] >= -points
        print(
            f"{label:12s} ratio {res['ratio']:.4f}  limit {limit:.0f} B  bytes ok {res['bytes_ok']}"
            f"  accuracy {res['accuracy_delta_points']:+.2f} points  ok {res['accuracy_ok']}"
        )

    pairs = {
        "int8": ["codec.quantize=int8"],
        "int8+encrypt": ["codec.quantize=int8", "codec.encrypt=true"],
    }
    samples: dict[str, list[dict]] = {k: [] for k in pairs}
    for i in range(args.repeats):
        order = list(pairs) if i % 2 == 0 else list(reversed(pairs))
        for label in order:
            samples[label].append(run(pairs[label], args.rounds))
    for label, runs in samples.items():
        report["encryption"][label] = {
            "median_round_seconds": statistics.median(r["median_round_seconds"] for r in runs),
            "command_seconds": [r["command_seconds"] for r in runs],
            "mean_encode_seconds": statistics.fmean(r["mean_encode_seconds"] for r in runs),
            "bytes_per_update": runs[0]["bytes_per_update"],
        }
    plain, sealed = report["encryption"]["int8"], report["encryption"]["int8+encrypt"]
    overhead = sealed["median_round_seconds"] / plain["median_round_seconds"] - 1
    report["encryption"]["overhead_round_seconds"] = overhead
    report["encryption"]["overhead_command_seconds"] = (
        statistics.fmean(sealed["command_seconds"]) / statistics.fmean(plain["command_seconds"]) - 1
    )
    print(
        f"encryption: median s/round {plain['median_round_seconds']:.3f} -> "
        f"{sealed['median_round_seconds']:.3f} ({100 * overhead:+.1f}%), client encode "
        f"{plain['mean_encode_seconds'] * 1e3:.1f} -> {sealed['mean_encode_seconds'] * 1e3:.1f} ms"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "bench_codec.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {path}")


if __name__ == "__main__":
    main()
