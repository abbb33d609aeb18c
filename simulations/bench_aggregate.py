"""Server-side aggregation: 100 int8 updates of a 10M-parameter model, validated and summed.

The issue's target: decoded and aggregated in at most 0.6 s on this 2-core machine, with peak
extra memory at most 3x one float32 model (holding 100 float32 updates would take 4 GB).

What is timed is the server's own path for every reply of a streaming round
(``RoundCollector.offer`` without the transport): :func:`fedsys.codec.check_payload` (parse,
per-tensor CRC-32, layout, finiteness and norm) then :meth:`StreamingSum.add` (block-scaled
int8 widened and added into the float64 running sums), and at the end
:meth:`StreamingSum.consume_into_weights` (the new model). Updates are distinct: each is a
fresh random delta shaped like ``bench_round_10m.py``'s MLP (10,003,903 parameters), int8
with per-block scales (block 256), made before the clock starts.

Peak extra memory: the process's peak RSS is reset (``/proc/self/clear_refs``) once the
payloads exist, and the report gives ``VmHWM`` minus the RSS at that moment.

For comparison, ``naive``: each update decoded to a whole float32 copy (``decode_update``) and
added with ``torch.add(..., alpha=w)``, the straightforward way.

Usage::

    python simulations/bench_aggregate.py            # 100 updates, 1 and 2 torch threads
    python simulations/bench_aggregate.py --updates 10 --out /tmp/agg.json   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsys.codec import (
    StreamingSum,
    UpdatePolicy,
    check_payload,
    decode_update,
    encode_update,
    pipeline_from_config,
)
from fedsys.codec.template import template_from
from fedsys.config import CodecConfig
from fedsys.memory import keep_freed_memory

OUT = Path(__file__).parent / "results" / "bench_aggregate.json"
HIDDEN = 3137  # bench_round_10m.py's MLP: H^2 + 52 H + 10 = 10,003,903 parameters


def layout(hidden: int) -> dict[str, torch.Tensor]:
    shapes = {
        "0.weight": (hidden, 40),
        "0.bias": (hidden,),
        "2.weight": (hidden, hidden),
        "2.bias": (hidden,),
        "4.weight": (10, hidden),
        "4.bias": (10,),
    }
    return {name: torch.zeros(shape) for name, shape in shapes.items()}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak() -> int:
    """Reset VmHWM to the current RSS (Linux >= 4.0); returns that RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_bytes()


def make_payloads(template: dict[str, torch.Tensor], n: int) -> list[bytes]:
    pipeline = pipeline_from_config(CodecConfig(quantize="int8", error_feedback=False))
    gen = torch.Generator().manual_seed(0)
    payloads = []
    for _ in range(n):
        delta = {k: torch.randn(v.shape, generator=gen) * 0.01 for k, v in template.items()}
        payloads.append(encode_update(delta, pipeline).payload)
    return payloads


def streaming(
    template: dict[str, torch.Tensor], payloads: list[bytes], base: dict[str, np.ndarray]
) -> tuple[float, dict[str, np.ndarray]]:
    spec = template_from(template)
    policy = UpdatePolicy(require_envelope=False)
    start = time.perf_counter()
    total = StreamingSum(spec)
    for i, payload in enumerate(payloads):
        checked = check_payload(payload, spec, policy)
        total.add(checked.wire, float(100 + i))  # example counts as weights
    new = total.consume_into_weights(base)
    return time.perf_counter() - start, new


def naive(
    template: dict[str, torch.Tensor], payloads: list[bytes]
) -> tuple[float, dict[str, torch.Tensor]]:
    start = time.perf_counter()
    sums = {k: torch.zeros(v.shape) for k, v in template.items()}
    weight = 0.0
    for i, payload in enumerate(payloads):
        for name, value in decode_update(payload).items():
            sums[name].add_(value, alpha=float(100 + i))
        weight += 100 + i
    mean = {k: v / weight for k, v in sums.items()}
    return time.perf_counter() - start, mean


def measure(hidden: int, updates: int, threads: int) -> dict[str, Any]:
    """One configuration, in this (fresh) process: memory from a cold run, time warm."""
    torch.set_num_threads(threads)
    template = layout(hidden)
    payloads = make_payloads(template, updates)
    base = {k: v.numpy() for k, v in template.items()}
    fp32_model = sum(v.numel() * 4 for v in template.values())
    # Cold, with glibc's default malloc: the aggregation's own allocations show in the RSS.
    baseline = reset_peak()
    cold_seconds, new = streaming(template, payloads, base)
    extra = peak_rss_bytes() - baseline
    del new
    baseline = reset_peak()
    _, mean = naive(template, payloads)
    naive_extra = peak_rss_bytes() - baseline
    del mean
    # Warm, as the ServerApp runs (runtime.reuse_freed_memory): best of three.
    keep_freed_memory()
    seconds = min(streaming(template, payloads, base)[0] for _ in range(3))
    naive_seconds = naive(template, payloads)[0]
    return {
        "torch_threads": threads,
        "updates": updates,
        "seconds": seconds,
        "ms_per_update": seconds / updates * 1000,
        "cold_seconds": cold_seconds,
        "peak_extra_bytes": extra,
        "peak_extra_vs_fp32_model": extra / fp32_model,
        "naive_seconds": naive_seconds,
        "naive_peak_extra_vs_fp32_model": naive_extra / fp32_model,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=HIDDEN)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child-threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_threads is not None:  # one measurement, printed as JSON for the parent
        print(json.dumps(measure(args.hidden, args.updates, args.child_threads)))
        return
    params = sum(v.numel() for v in layout(args.hidden).values())
    runs = []
    for threads in (1, 2):  # each in a fresh process, so peak RSS belongs to this run alone
        cmd = [sys.executable, __file__, "--updates", str(args.updates)]
        cmd += ["--hidden", str(args.hidden), "--child-threads", str(threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        runs.append(row)
        print(
            f"threads {threads}: {row['seconds']:.3f} s ({row['ms_per_update']:.1f} ms/update; "
            f"cold {row['cold_seconds']:.3f} s), peak extra "
            f"{row['peak_extra_vs_fp32_model']:.2f}x fp32 model; naive "
            f"{row['naive_seconds']:.3f} s, {row['naive_peak_extra_vs_fp32_model']:.2f}x",
            flush=True,
        )
    best = min(runs, key=lambda r: r["seconds"])
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "load_average": list(os.getloadavg()),
        },
        "parameters": params,
        "runs": runs,
        "target_seconds": 0.6,
        "target_peak_extra_vs_fp32_model": 3.0,
        "within_target": best["seconds"] <= 0.6
        and max(r["peak_extra_vs_fp32_model"] for r in runs) <= 3.0,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
