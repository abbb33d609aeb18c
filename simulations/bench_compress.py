"""Compressed variants of a published model, measured side by side on the endpoint.

    python simulations/bench_compress.py [--quick]

For each model (MNIST-1D with a wide 1-D CNN, ``model.channels=128``; the 10M-parameter MLP
``hidden=[3137, 3137]`` on MNIST-1D) the global model is trained centrally on the client
pool (MNIST-1D's training set less the server's 10% public split; the benchmark is about
compression, not federation), published into a fresh registry, and compressed with
``fedsys.compress.compress_version`` into int8, pruned 50%, distilled, low-rank and
pruned+int8 variants, each tuned on the public split only. One ``fedsys serve`` process then
serves every variant; the driver measures, over HTTP with .npy bodies and one keep-alive
connection, the p50 latency of batch-1 requests and the rows per second of batch-32 requests,
alternating variants round by round so that load from other processes on the machine falls
on all of them alike. Accuracy is on the 1,000-row test split. Refused variants (over the
accuracy budget) are measured too: the bench publishes every variant and applies the 1-point
budget to the figures, marking the variants that ``fedsys compress`` would refuse.

``--background`` instead runs one short ``fedsys simulate`` (8 rounds, a new version every
round) without and with ``compress.enabled`` and compares the round times: compression runs
in a niced child process and must not slow the round loop.

``--lm`` instead builds the ``lm_small`` table (int8 weight-only and low-rank variants of a
briefly pre-trained language model; see ``bench_compress_lm.py``) into the same JSON.

Writes ``simulations/results/bench_compress.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_serving import Conn, encode_request, new_registry, npy, publish, server

from fedsys.compress.job import compress_version
from fedsys.compress.measure import within_budget
from fedsys.compress.settings import ALL_VARIANTS
from fedsys.config import ExperimentConfig, build_config
from fedsys.crypto.keys import generate_signing_key
from fedsys.data import load_dataset
from fedsys.models import build_model, count_parameters
from fedsys.training import evaluate

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "simulations" / "results" / "bench_compress.json"

MODELS: dict[str, dict[str, Any]] = {
    "cnn1d-128": {
        "overrides": ["model.name=cnn1d", "model.channels=128"],
        "epochs": 4,
        "lr": 2e-3,
        "compress": [],
    },
    "mlp-10m": {
        "overrides": ["model.name=mlp", "model.hidden=[3137,3137]"],
        "epochs": 4,
        "lr": 3e-4,
        "compress": ["compress.lowrank_rank=128"],
    },
}
# Every variant is published so that every one is measured on the endpoint; the 1-point
# budget (compress.accuracy_budget's default) is applied to the figures afterwards.
BUDGET = 0.01
COMMON = ["compress.enabled=true", "compress.latency_repeats=10", "compress.accuracy_budget=1.0"]


def train(cfg: ExperimentConfig, epochs: int, lr: float) -> tuple[torch.nn.Module, float, float]:
    """Centrally trained global model, its test accuracy and training seconds."""
    pool, test, info = load_dataset(cfg.data, 0)
    torch.manual_seed(0)
    model = build_model(cfg.model, info)
    x, y = torch.from_numpy(pool.x), torch.from_numpy(pool.y)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for begin in range(0, len(y), 32):
            idx = order[begin : begin + 32]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    seconds = time.perf_counter() - start
    model.eval()
    accuracy = evaluate(
        model,
        torch.from_numpy(test.x),
        torch.from_numpy(test.y),
        batch_size=1024,
        device=torch.device("cpu"),
    ).accuracy
    return model, accuracy, seconds


async def endpoint_figures(
    port: int, name: str, variants: list[str], x: np.ndarray, rounds: int, calls: int
) -> dict[str, dict[str, float]]:
    """Per variant: p50 ms of batch-1 requests, rows/s of batch-32 requests (interleaved)."""
    conn = await Conn.open(port)
    single: dict[str, list[float]] = {v: [] for v in variants}
    batch: dict[str, list[float]] = {v: [] for v in variants}
    requests = {
        v: (
            encode_request(
                f"/v1/models/{name}:predict?variant={v}", npy(x[:1]), "application/x-npy"
            ),
            encode_request(
                f"/v1/models/{name}:predict?variant={v}", npy(x[:32]), "application/x-npy"
            ),
        )
        for v in variants
    }
    try:
        for v in variants:  # warm-up, and a check that every variant answers
            for req in requests[v]:
                status, body = await conn.send(req)
                if status != 200:
                    raise RuntimeError(f"{v}: HTTP {status}: {body[:200]!r}")
        for _ in range(rounds):
            for v in variants:
                one, many = requests[v]
                for _ in range(calls):
                    t = time.perf_counter()
                    await conn.send(one)
                    single[v].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    await conn.send(many)
                    batch[v].append(time.perf_counter() - t)
    finally:
        conn.close()
    return {
        v: {
            "p50_ms_batch1": statistics.median(single[v]) * 1000.0,
            "rows_per_s_batch32": 32.0 / statistics.median(batch[v]),
        }
        for v in variants
    }


def bench_model(label: str, spec: dict[str, Any], quick: bool, root: Path) -> dict[str, Any]:
    overrides = [*spec["overrides"], *COMMON, *spec["compress"]]
    if quick:
        overrides += ["compress.distill_epochs=5", "compress.finetune_epochs=2"]
    cfg = build_config({"name": label}, overrides)
    epochs = 1 if quick else spec["epochs"]
    model, accuracy, train_s = train(cfg, epochs, spec["lr"])
    _, test, info = load_dataset(cfg.data, 0)
    key = generate_signing_key()
    registry = new_registry(root / label, key)
    version = publish(registry, key, label, model, cfg.model, info, accuracy=accuracy)
    start = time.perf_counter()
    outcome = compress_version(registry, label, version, cfg, key)
    compress_s = time.perf_counter() - start
    served = ["fp32", *outcome.published]
    x = test.x[:32]
    rounds, calls = (2, 5) if quick else (5, 20)
    with server(registry.root, "--max-batch-size", "32", "--max-wait-ms", "0") as port:
        http = asyncio.run(endpoint_figures(port, label, served, x, rounds, calls))
    fp32 = outcome.report.fp32
    rows: dict[str, dict[str, Any]] = {
        "fp32": {
            "bytes": fp32.bytes,
            "parameters": count_parameters(model),
            "accuracy": fp32.accuracy,
            "refused": None,
            "in_process": fp32.model_dump(),
        }
    }
    for v in outcome.report.variants:
        rows[v.name] = {
            "bytes": v.metrics.bytes,
            "parameters": v.metrics.parameters,
            "accuracy": v.metrics.accuracy,
            "refused": within_budget(fp32.accuracy, v.metrics.accuracy, BUDGET),
            "in_process": v.metrics.model_dump(),
        }
    for name, figures in http.items():
        rows[name].update(figures)
    base = rows["fp32"]
    for row in rows.values():
        row["bytes_ratio"] = row["bytes"] / base["bytes"]
        row["accuracy_delta_points"] = (row["accuracy"] - base["accuracy"]) * 100
        if "rows_per_s_batch32" in row:
            row["speedup_batch32"] = row["rows_per_s_batch32"] / base["rows_per_s_batch32"]
    return {
        "model": cfg.model.model_dump(mode="json"),
        "parameters": count_parameters(model),
        "train_epochs": epochs,
        "train_seconds": train_s,
        "compress_seconds": compress_s,
        "published": list(outcome.published),
        "variants": rows,
        "targets": targets(rows),
    }


def targets(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's two claims, per model: small and accurate; fast at batch 32."""
    small = [
        n
        for n, r in rows.items()
        if n != "fp32"
        and r["refused"] is None
        and r["bytes_ratio"] <= 0.3
        and r["accuracy_delta_points"] >= -1.0
    ]
    fast = [n for n, r in rows.items() if n != "fp32" and r.get("speedup_batch32", 0) >= 1.5]
    return {
        "at_most_0.3x_bytes_within_1_point": small,
        "at_least_1.5x_batch32_throughput": fast,
        "met": bool(small) and bool(fast),
    }


def table(label: str, result: dict[str, Any]) -> str:
    lines = [
        f"{label} ({result['parameters']:,} parameters)",
        f"{'variant':<12} {'bytes':>11} {'x fp32':>7} {'acc':>6} {'d pts':>6} "
        f"{'p50 b1 ms':>9} {'rows/s b32':>10} {'speedup':>7}  status",
    ]
    for name in ("fp32", *ALL_VARIANTS):
        r = result["variants"].get(name)
        if r is None:
            continue
        status = "within budget" if r["refused"] is None else "over budget"
        lines.append(
            f"{name:<12} {r['bytes']:>11,} {r['bytes_ratio']:>7.3f} {r['accuracy']:>6.3f} "
            f"{r['accuracy_delta_points']:>6.1f} {r.get('p50_ms_batch1', float('nan')):>9.2f} "
            f"{r.get('rows_per_s_batch32', float('nan')):>10.0f} "
            f"{r.get('speedup_batch32', float('nan')):>7.2f}  {status}"
        )
    return "\n".join(lines)


BACKGROUND_RUN = [
    "train.rounds=8",
    "data.num_partitions=4",
    "model.channels=64",
    "publish.mode=every_round",
    "runtime.progress=false",
    "compress.variants=[int8,pruned,pruned_int8]",
]


def simulate(out: Path, compress: bool) -> dict[str, Any]:
    """One ``fedsys simulate`` run; its per-round seconds (from metrics.jsonl)."""
    cmd = [sys.executable, "-m", "fedsys.cli", "simulate", "--out", str(out)]
    for item in [*BACKGROUND_RUN, f"compress.enabled={str(compress).lower()}"]:
        cmd += ["--set", item]
    env = {**os.environ, "FLWR_TELEMETRY_ENABLED": "0"}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = [float(r["seconds"]) for r in rows if "seconds" in r]
    variants = sorted(
        str(p.relative_to(out / "registry"))
        for p in (out / "registry").glob("*/versions/*/variants/*")
        if not p.name.startswith(".")
    )
    log = out / "compress.log"
    refused = [
        line.strip()
        for line in (log.read_text().splitlines() if log.exists() else [])
        if "refused" in line or "error" in line.lower()
    ]
    return {
        "wall_seconds": wall,
        "round_seconds": seconds,
        "median_round_seconds_after_first": statistics.median(seconds[1:]),
        "variants_written": variants,
        "compress_log_refusals": refused,
    }


def background(root: Path) -> dict[str, Any]:
    """The same short training run without and with background compression."""
    off = simulate(root / "off", compress=False)
    on = simulate(root / "on", compress=True)
    return {
        "run": BACKGROUND_RUN,
        "without": off,
        "with": on,
        "round_time_ratio": on["median_round_seconds_after_first"]
        / off["median_round_seconds_after_first"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="A smoke run (minutes less).")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument(
        "--background",
        action="store_true",
        help="Instead: a short training run without and with background compression.",
    )
    parser.add_argument(
        "--lm",
        action="store_true",
        help="Instead: the lm_small table (int8 weight-only, low-rank; see bench_compress_lm).",
    )
    args = parser.parse_args()
    if args.lm:
        from bench_compress_lm import bench_lm_small, lm_table

        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bench-compress-lm-") as tmp:
            result = bench_lm_small(Path(tmp), args.quick)
        result["seconds"] = round(time.perf_counter() - start, 1)
        result["load_average"] = os.getloadavg()
        print(json.dumps(result, indent=2))
        print(lm_table(result))
        if not args.quick:
            existing = json.loads(OUT.read_text()) if OUT.exists() else {}
            existing["lm_small"] = result
            OUT.write_text(json.dumps(existing, indent=2) + "\n")
            print(f"wrote {OUT}")
        return
    if args.background:
        with tempfile.TemporaryDirectory(prefix="bench-compress-bg-") as tmp:
            result = background(Path(tmp))
        print(json.dumps(result, indent=2))
        existing = json.loads(OUT.read_text()) if OUT.exists() else {}
        existing["background"] = result
        OUT.write_text(json.dumps(existing, indent=2) + "\n")
        return
    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-compress-") as tmp:
        for label in args.models:
            results[label] = bench_model(label, MODELS[label], args.quick, Path(tmp))
            print(table(label, results[label]), flush=True)
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    report = {
        "machine": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "quick": args.quick,
        "seconds": time.perf_counter() - start,
        "models": results,
        "background": previous.get("background"),
        "lm_small": previous.get("lm_small"),
    }
    if not args.quick:
        OUT.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
