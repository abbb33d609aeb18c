"""Peak memory per Ray worker when many virtual LM clients share a few worker processes.

Runs ``fedsys simulate`` on ``configs/lm_quickstart.yaml`` with the ~100M-parameter
``lm_base`` (built from its config, no pre-training: memory does not depend on the weights'
values) and ``--clients`` virtual clients over ``--workers`` Ray workers (one CPU each), and
samples every process of the run twice a second: each process's ``VmHWM`` (its own peak RSS,
kept by the kernel, so no peak is missed between samples). The Ray workers that served
clients are the processes whose command line starts with ``ray::``. The figure of merit is a
worker's peak RSS against one copy of the base in fp32 (4 bytes a parameter); the RSS of a
bare interpreter that imported what a worker imports (torch, transformers, peft, flwr, ray)
is reported beside it, so the share the model and training add is visible.

Each ``runtime.freed_memory`` policy in ``--freed-memory`` is a run of its own (``keep``, the
default, reuses freed blocks: fastest; ``release`` hands blocks from 1 MiB up back to the OS:
the worker holds what it uses, not its heap's high-water mark).

A bounded run by default (1 round, 2 local steps, batch 4, a 16-chunk central evaluation):
memory is set by the base and one training step, not by the number of steps.

Usage::

    python simulations/bench_lm_memory.py --clients 10 --workers 2
    python simulations/bench_lm_memory.py --set lm.gradient_checkpointing=true \
        --out simulations/results/bench_lm_memory_checkpointing.json
    python simulations/bench_lm_memory.py --freed-memory release  # one policy only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _timing import ROOT, child_env, fedsys_command, machine_info, save_report, tail

CONFIG = ROOT / "configs" / "lm_quickstart.yaml"
OUT = Path(__file__).parent / "results" / "bench_lm_memory.json"
TARGET = 1.5  # peak RSS per worker / one fp32 copy of the base
IMPORTS = "import torch, transformers, peft, flwr, ray, fedsys.app"


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode(errors="replace")
    except OSError:
        return None


def _hwm_kib(pid: int) -> int | None:
    status = _read(f"/proc/{pid}/status")
    for line in (status or "").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat:
                fields = stat[stat.rfind(")") + 2 :].split()
                children.setdefault(int(fields[1]), []).append(int(entry))
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, []))
    return out


def import_floor_mib() -> float:
    """Peak RSS of an interpreter that only imported what a client worker imports."""
    code = f"{IMPORTS}; print(open('/proc/self/status').read())"
    text = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), check=True
    ).stdout
    line = next(x for x in text.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def run(
    clients: int, workers: int, rounds: int, steps: int, timeout: float, extra: list[str]
) -> dict[str, Any]:
    sets = [
        "lm.base=null",
        "lm.size=lm_base",
        f"data.num_partitions={clients}",
        f"strategy.min_train_nodes={clients}",
        f"strategy.min_available_nodes={clients}",
        f"train.rounds={rounds}",
        f"train.max_steps={steps}",
        "train.batch_size=4",
        "lm.max_eval_chunks=16",
        # Ray runs cpus / client_cpus actors at once: the number of worker processes
        f"runtime.client_cpus={(os.cpu_count() or 1) / workers}",
        "runtime.progress=false",
        "publish.mode=never",
        "serve.enabled=false",
        *extra,
    ]
    with tempfile.TemporaryDirectory() as tmp:
        args = ["simulate", "--config", str(CONFIG.relative_to(ROOT))]
        for item in sets:
            args += ["--set", item]
        log_path = Path(tmp) / "run.log"
        peaks: dict[int, tuple[int, str]] = {}
        start = time.perf_counter()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [*fedsys_command(), *args, "--out", str(Path(tmp) / "out")],
                cwd=ROOT,
                env=child_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            while proc.poll() is None and time.perf_counter() - start < timeout:
                for pid in _descendants(proc.pid):
                    hwm = _hwm_kib(pid)
                    cmd = (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ").strip()
                    if hwm is not None:
                        seen_hwm, seen_cmd = peaks.get(pid, (0, ""))
                        peaks[pid] = (max(hwm, seen_hwm), cmd or seen_cmd)
                time.sleep(0.5)
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
            rc = proc.wait()
        wall = time.perf_counter() - start
        log_tail = tail(log_path)
    workers_seen = sorted(
        ((kib / 1024, cmd[:60]) for kib, cmd in peaks.values() if cmd.startswith("ray::")),
        reverse=True,
    )
    return {
        "returncode": rc,
        "wall_seconds": wall,
        "command": "fedsys " + " ".join(args),
        "worker_peaks_mib": workers_seen,
        "driver_peak_mib": peaks.get(proc.pid, (0, ""))[0] / 1024,
        "log_tail": log_tail if rc != 0 else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=1200.0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        help="an extra experiment override, e.g. lm.gradient_checkpointing=true (repeatable)",
    )
    parser.add_argument(
        "--freed-memory",
        nargs="+",
        default=["keep", "release"],
        choices=["keep", "release", "system"],
        help="runtime.freed_memory policies to run one after the other (default: keep release)",
    )
    args = parser.parse_args()
    from fedsys.tasks.lm.models import build_named

    base_params = sum(p.numel() for p in build_named("lm_base", 257, 128, 0).parameters())
    base_mib = base_params * 4 / 2**20
    report: dict[str, Any] = {
        "machine": machine_info(),
        "load_before": os.getloadavg(),
        "clients": args.clients,
        "workers": args.workers,
        "rounds": args.rounds,
        "local_steps": args.steps,
        "base_parameters": base_params,
        "base_fp32_mib": base_mib,
        "import_floor_mib": import_floor_mib(),
    }
    report["overrides"] = args.sets
    report["policies"] = {}
    for policy in args.freed_memory:
        sets = [*args.sets, f"runtime.freed_memory={policy}"]
        result = run(args.clients, args.workers, args.rounds, args.steps, args.timeout, sets)
        peaks = [mib for mib, _ in result["worker_peaks_mib"]]
        if peaks:
            worst = max(peaks)
            result["worst_worker_peak_mib"] = worst
            result["ratio_to_base_fp32"] = worst / base_mib
            result["ratio_above_import_floor"] = (worst - report["import_floor_mib"]) / base_mib
        report["policies"][policy] = result
    report["load_after"] = os.getloadavg()
    report["target"] = TARGET
    measured = [r for r in report["policies"].values() if "ratio_to_base_fp32" in r]
    if measured:  # the leanest policy's figures, as before there were several
        best = min(measured, key=lambda r: r["ratio_to_base_fp32"])
        for key in ("worst_worker_peak_mib", "ratio_to_base_fp32", "ratio_above_import_floor"):
            report[key] = best[key]
    save_report(report, args.out)
    brief = {k: v for k, v in report.items() if k not in ("machine", "policies")}
    print(json.dumps(brief, indent=1))
    for policy, result in report["policies"].items():
        print(policy, f"{result['wall_seconds']:.0f} s", json.dumps(result["worker_peaks_mib"][:2]))
    return 0 if all(r["returncode"] == 0 for r in report["policies"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
