"""Byzantine clients against fedsys's server: final accuracy and rejections per attack.

The quickstart (MNIST-1D, 1-D CNN) with 20 clients, 0 / 10 / 30 % of them malicious
(``attack.fraction``) for every behaviour of ``attack.behaviour``, under FedAvg without and
with the default defence (``defense``: adaptive norm bound and direction check), FedMedian,
Krum and FedTrimmedAvg (the robust ones without the defence, to show what each strategy
stands on its own). Behaviours that validation rejects outright (non-finite or overflowing
values, bad weights, wrong shapes, bombs) run under FedAvg only: no strategy ever sees them.
15 rounds by default (the quickstart runs 30) to keep the ~70 federations near 20 minutes. The
server's round loop and the ClientApp are fedsys's own, run in one process
(``fedsys.inprocess.InProcessGrid``) instead of Ray so the ~100 federations fit in minutes.

Also measured (``bombs``): the server's memory and time to refuse payloads that claim more
than they carry (a deflated manifest that would expand to 64 MiB, an envelope claiming a huge
payload, a manifest naming thousands of tensors), for the 10M-parameter MLP of
``bench_round_10m.py``, whose size limits admit the bomb's bytes.

Usage::

    python simulations/bench_byzantine.py                   # the full table (~20-40 min)
    python simulations/bench_byzantine.py --rounds 5 --behaviours scale nan --out /tmp/b.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import tempfile
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

OUT = Path(__file__).parent / "results" / "bench_byzantine.json"
OFF = ["defense.norm_bound=none", "defense.direction_check=false"]
STRATEGIES: dict[str, list[str]] = {
    "fedavg": ["strategy.name=fedavg", *OFF],
    "fedavg+defense": ["strategy.name=fedavg"],  # the default defence: norm bound + direction
    # the direction check's opt-in spread line (keeps nearly orthogonal honest updates)
    "fedavg+defense+spread": ["strategy.name=fedavg", "defense.min_cosine_spread=3"],
    "fedmedian": ["strategy.name=fedmedian", *OFF],
    "krum": ["strategy.name=krum", *OFF],
    "fedtrimmedavg": ["strategy.name=fedtrimmedavg", *OFF],
}
# Rejected by validation before any strategy sees them: run under FedAvg (default defence)
# only; every strategy would receive exactly the same accepted updates.
VALIDATION_ONLY = {"nan", "inf", "overflow", "huge_weight", "nan_weight", "wrong_shape", "bomb"}
CLIENTS = 20


def one_run(strategy: str, behaviour: str | None, share: float, rounds: int) -> dict[str, Any]:
    """One whole federation in this process; never raises (a crash is a result)."""
    from fedsys.config import build_config
    from fedsys.inprocess import run_in_process
    from fedsys.server.records import read_rounds

    torch.set_num_threads(1)
    logging.getLogger("fedsys").setLevel(logging.ERROR)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    malicious = round(share * CLIENTS)
    overrides = [
        f"data.num_partitions={CLIENTS}",
        f"train.rounds={rounds}",
        f"strategy.min_available_nodes={CLIENTS}",
        f"strategy.num_malicious_nodes={malicious}",
        "publish.mode=never",
        "serve.enabled=false",
        "runtime.progress=false",
        "runtime.torch_threads=1",
        *STRATEGIES[strategy],
    ]
    if behaviour is not None and share > 0:
        overrides += [f"attack.behaviour={behaviour}", f"attack.fraction={share}"]
    cfg = build_config({}, overrides)
    row: dict[str, Any] = {"strategy": strategy, "behaviour": behaviour or "none", "share": share}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                summary = run_in_process(cfg, out)
            records = read_rounds(out / "metrics.jsonl")
            from safetensors.numpy import load_file

            model = load_file(out / "model.safetensors")
            row.update(
                final_accuracy=summary.final_accuracy,
                finite_model=all(np.isfinite(v).all() for v in model.values()),
                rejected=sum(len(r.rejected) for r in records),
                rejected_reasons=_reasons(records),
                refused_rounds=sum(r.aggregation_refused is not None for r in records),
                crashed=None,
            )
        except Exception as exc:  # recorded: the acceptance criterion is that none happens
            row.update(crashed=f"{type(exc).__name__}: {exc}", final_accuracy=None)
    row["seconds"] = time.perf_counter() - start
    return row


def _reasons(records: list[Any]) -> dict[str, int]:
    """Rejections by the first words of their reason (``update L2 norm``, ``tensor 'x'``...)."""
    out: dict[str, int] = {}
    for r in records:
        for rej in r.rejected:
            key = " ".join(rej.reason.split()[:3])
            out[key] = out.get(key, 0) + 1
    return out


def bombs() -> list[dict[str, Any]]:
    """Memory above the baseline and time to refuse each claimed-size attack, 10M model."""
    from fedsys.client.attack import decompression_bomb
    from fedsys.codec import UpdatePolicy, encode_update
    from fedsys.crypto import (
        AggregatorKeys,
        ClientKeys,
        RoundBinding,
        generate_exchange_key,
        generate_signing_key,
        seal,
    )
    from fedsys.server.collect import RoundCollector

    hidden = 3137  # bench_round_10m.py's MLP: 10,003,903 parameters
    model = {
        "0.weight": np.zeros((hidden, 40), np.float32),
        "0.bias": np.zeros(hidden, np.float32),
        "2.weight": np.zeros((hidden, hidden), np.float32),
        "2.bias": np.zeros(hidden, np.float32),
        "4.weight": np.zeros((10, hidden), np.float32),
        "4.bias": np.zeros(10, np.float32),
    }
    fp32 = sum(v.nbytes for v in model.values())
    server, alice = generate_exchange_key(), generate_signing_key()
    keys = AggregatorKeys(server, {"alice": alice.public_key()})
    binding = RoundBinding(1, 1, 7)
    client = ClientKeys("alice", alice, server.public_key())
    many = {f"t{i}": torch.zeros(1) for i in range(5000)}
    payloads = {
        "manifest inflating to 64 MiB": decompression_bomb(),
        "manifest inflating to 1 GiB": decompression_bomb(1 << 30),
        "5000 tensors named": encode_update(many, [], num_examples=1).payload,
    }
    rows = []
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    envelopes = {name: seal(p, client, binding) for name, p in payloads.items()}
    # a genuine client signs whatever header it likes: one claiming a 1 TiB payload
    lying = seal(b"\0" * 4096, client, binding)
    header = lying.header.model_copy(update={"payload_length": 1 << 40, "frame_count": 1 << 20})
    forged = dict(lying.to_record_values())
    forged["header"] = header.model_dump_json().encode()
    forged["signature"] = alice.sign(header.signed_bytes())
    records = {n: dict(e.to_record_values()) for n, e in envelopes.items()}
    records["envelope claiming 1 TiB"] = forged
    for name, record in records.items():
        instruction = Message(RecordDict(), dst_node_id=7, message_type="train")
        reply = Message(
            RecordDict(
                {"update": ConfigRecord(record), "metrics": MetricRecord({"num-examples": 1})}
            ),
            reply_to=instruction,
        )
        collector = RoundCollector(
            model,
            UpdatePolicy(),
            binding=lambda node: binding,
            keys=keys,
            client_ids={},
            keep_stragglers=True,
            streaming=True,
        )
        tracemalloc.start()
        start = time.perf_counter()
        collector.offer(reply)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result = collector.finish(lambda n: (0, n), build_record=False)
        rows.append(
            {
                "payload": name,
                "bytes_sent": sum(len(f) for f in record.get("frames", [])),
                "refused": result.accepted == 0,
                "reason": result.rejected[0].reason if result.rejected else None,
                "seconds": seconds,
                "peak_bytes": peak,
                "peak_over_model_fp32": peak / fp32,
            }
        )
    return rows


def main() -> None:
    from fedsys.config import AttackName

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--behaviours", nargs="*", default=list(get_args(AttackName)))
    parser.add_argument("--shares", nargs="*", type=float, default=[0.1, 0.3])
    parser.add_argument("--strategies", nargs="*", default=list(STRATEGIES))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    jobs = [(s, None, 0.0) for s in args.strategies]
    jobs += [
        (s, b, f)
        for s in args.strategies
        for b in args.behaviours
        for f in args.shares
        if b not in VALIDATION_ONLY or s == "fedavg+defense"
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(one_run, s, b, f, args.rounds) for s, b, f in jobs]
        rows = []
        for future in futures:
            row = future.result()
            rows.append(row)
            acc = row.get("final_accuracy")
            print(
                f"{row['strategy']:17s} {row['behaviour']:12s} {row['share']:.1f} "
                f"acc {acc if acc is None else round(acc, 4)}  rejected {row.get('rejected')}"
                f"  {'CRASH ' + row['crashed'] if row.get('crashed') else ''}",
                flush=True,
            )
    baseline = {r["strategy"]: r["final_accuracy"] for r in rows if r["behaviour"] == "none"}
    for r in rows:
        base, acc = baseline.get(r["strategy"]), r.get("final_accuracy")
        r["drop_points"] = 100 * (base - acc) if base is not None and acc is not None else None
    bomb_rows = bombs()
    for b in bomb_rows:
        print(
            f"bomb {b['payload']:32s} refused {b['refused']}  {1000 * b['seconds']:.1f} ms  "
            f"peak {b['peak_bytes'] / 2**20:.2f} MiB ({b['peak_over_model_fp32']:.3f}x model)"
        )
    default_defence = [r for r in rows if r["strategy"] == "fedavg+defense" and r["share"] == 0.1]
    report = {
        "benchmark": "bench_byzantine",
        "machine": {"python": platform.python_version(), "torch": torch.__version__},
        "clients": CLIENTS,
        "rounds": args.rounds,
        "seconds": time.perf_counter() - started,
        "runs": rows,
        "bombs": bomb_rows,
        "checks": {
            "no_crash": all(not r.get("crashed") for r in rows),
            "all_models_finite": all(r.get("finite_model", False) for r in rows),
            "default_defence_10pct_max_drop_points": max(
                (r["drop_points"] for r in default_defence if r["drop_points"] is not None),
                default=None,
            ),
            "bombs_refused": all(b["refused"] for b in bomb_rows),
            "bombs_max_ms": max(1000 * b["seconds"] for b in bomb_rows),
            "bombs_max_peak_over_model_fp32": max(b["peak_over_model_fp32"] for b in bomb_rows),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["checks"], indent=2))


if __name__ == "__main__":
    main()
