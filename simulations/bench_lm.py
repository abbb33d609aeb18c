"""Federated LoRA on the standard library's packages: does federating pay, and what it costs.

On ``configs/lm_quickstart.yaml`` (lm_tiny, 10 clients by package, LoRA r=8), every client's
*own held-out text* is scored under five models, each trained for the same number of local
steps per client (``rounds x train.max_steps``):

- ``base``: the pre-trained base (``fedsys pretrain`` on the public split), no adapter;
- ``local``: each client fine-tunes its own adapter alone;
- ``fedit`` and ``ffa``: federated LoRA through fedsys's round loop and ClientApp (in one
  process, ``fedsys.inprocess``), int8 adapter updates as in the quickstart;
- ``central``: one adapter trained on the pooled client data (the upper bound), with as many
  steps as all clients together (the same tokens and the same gradient steps in total as the
  federation);
- ``central_depth``: a reference, not a claim: the pooled data with the federation's
  sequential depth (``rounds x train.max_steps`` steps of a batch ``num_partitions`` times
  larger: the same tokens again), which is what averaging clients' updates approximates;
- ``central_frozen_a``: FFA-LoRA's own ceiling, ``central`` with A frozen.

FFA-LoRA (and ``central_frozen_a``) use ``lm.lora.init_a``'s default for ffa, an orthogonal
frozen A; ``--override ffa:lm.lora.init_a=kaiming`` gives the earlier Kaiming-uniform A.

Federated variants use the quickstart's strategy (FedAdam, server-side Adam) in Reddi et al.'s
FedOpt setting: every round each client takes one plain-SGD step (``FED_CLIENT``) and the
server's adaptive optimizer (``FED_STRATEGY`` and ``FED_SERVER_LR`` per variant: FedAdam for
FedIT, FedYogi for FFA-LoRA) does the optimizing, so 80 rounds x 1 step give every client the
same 80 local steps as the other variants. Local-only and centralized keep the quickstart's
client optimizer (Adam).

Also: bytes of one int8 LoRA update against the full model in fp32 (lm_tiny and lm_base, FedIT
and FFA), and the gap between the aggregated adapter's B·A and the mean of the clients' B·A
(FFA exact, FedIT not). Writes ``simulations/results/bench_lm.json``.

Usage::

    python simulations/bench_lm.py                  # everything (~15-30 min on two cores)
    python simulations/bench_lm.py --rounds 2 --steps 1 --skip-base-bytes --out /tmp/lm.json
    # one variant, base/local/central rows read from the committed report (minutes):
    python simulations/bench_lm.py --variants base,ffa --out /tmp/ffa.json \
        --override ffa:lm.lora.init_a=kaiming --override ffa:strategy.server_lr=0.03
    python simulations/bench_lm.py --seed 1 ...    # other clients, held-out text and A
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "lm_quickstart.yaml"
OUT = Path(__file__).parent / "results" / "bench_lm.json"
CPU = torch.device("cpu")


# Less text per client than the quickstart (32 chunks of 128 bytes, a quarter held out): the
# regime federated learning is for, where a client alone has too little to fine-tune on.
TEXT = ["lm.text.max_client_chunks=32", "lm.text.test_fraction=0.25"]
# The federated clients' local step: plain SGD (no momentum), one step a round. Its learning
# rate only scales the pseudo-gradient FedAdam normalizes; tau (Adam's epsilon on the server)
# sits well below that pseudo-gradient (~1e-3 a coordinate) so FedAdam acts as Adam.
FED_CLIENT = ["train.optimizer=sgd", "train.lr=1.0", "train.momentum=0", "strategy.tau=1e-6"]
# The server optimizer and its learning rate for each federated variant: the best of those
# tried at 80 rounds x 1 step, seed 0 (FedIT: FedAdam 0.01 / 0.03; FFA: FedAdam 0.01 / 0.03 /
# 0.04 / 0.06 / 0.1, FedYogi 0.02 / 0.03 / 0.05, FedAdagrad 0.05 / 0.1, all with a
# Kaiming-uniform A; with the orthogonal A FedYogi 0.01 / 0.02 / 0.03).
FED_STRATEGY = {"fedit": "fedadam", "ffa": "fedyogi"}
FED_SERVER_LR = {"fedit": 0.01, "ffa": 0.02}
# Every variant, in the order they are reported; central_frozen_a is FFA-LoRA's own ceiling
# (centralized with A frozen, as many steps as central).
VARIANTS = ("base", "local", "central", "central_depth", "central_frozen_a", "fedit", "ffa")
# The exactness check: one round of the quickstart's own local training (4 Adam steps).
EXACTNESS_STEPS = 4


def _config(base: Path | None, rounds: int, steps: int, extra: list[str] | None = None) -> Any:
    from fedsys.config import load_config

    overrides = [
        *TEXT,
        f"train.rounds={rounds}",
        f"train.max_steps={steps}",
        "train.local_epochs=1000",  # max_steps decides every client's steps
        "runtime.progress=false",
        "runtime.torch_threads=1",
        "publish.mode=never",
        "serve.enabled=false",
        *(extra or []),
    ]
    overrides.append(f"lm.base={base}" if base is not None else "lm.base=null")
    return load_config(CONFIG, overrides)


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)
    logging.getLogger("fedsys").setLevel(logging.ERROR)
    logging.getLogger("flwr").setLevel(logging.ERROR)


def _client_scores(
    task: Any, model: Any, states: list[dict[str, np.ndarray]]
) -> list[dict[str, float]]:
    """Each client's held-out loss, perplexity and accuracy under its own state."""
    rows = []
    for pid, state in enumerate(states):
        task.load_state(model, {k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        m = task.evaluate(model, task.client_data(pid).held_out, device=CPU)
        rows.append(
            {
                "client": task.text.clients[pid].name,
                "loss": m.loss,
                "perplexity": m.extra["perplexity"],
                "accuracy": m.accuracy,
            }
        )
    return rows


def _summary(rows: list[dict[str, float]]) -> dict[str, Any]:
    return {
        "mean_perplexity": statistics.fmean(r["perplexity"] for r in rows),
        "worst_perplexity": max(r["perplexity"] for r in rows),
        "mean_loss": statistics.fmean(r["loss"] for r in rows),
        "mean_accuracy": statistics.fmean(r["accuracy"] for r in rows),
        "worst_accuracy": min(r["accuracy"] for r in rows),
        "clients": rows,
    }


def _train_alone(
    task: Any, cfg: Any, data: Any, steps: int, seed: int, batch_size: int | None = None
) -> dict[str, np.ndarray]:
    model = task.model()
    task.load_state(model, {k: torch.from_numpy(v) for k, v in task.initial_state().items()})
    batch = batch_size or cfg.train.batch_size
    train = cfg.train.model_copy(
        update={"max_steps": steps, "local_epochs": 10_000, "batch_size": batch}
    )
    task.train(
        model,
        data,
        train,
        seed=seed,
        device=CPU,
        proximal_mu=0.0,
        work_fraction=1.0,
        partition_id=0,
    )
    return {k: v.detach().numpy().copy() for k, v in task.state_of(model).items()}


def variant(
    name: str, base: str | None, rounds: int, steps: int, overrides: list[str] | None = None
) -> dict[str, Any]:
    """One of ``VARIANTS``, scored on every client's held-out text; ``overrides`` (dotted
    config keys) come last, after the variant's own settings."""
    _quiet()
    from fedsys.tasks.base import ClientData
    from fedsys.tasks.lm.task import LanguageModelTask

    aggregation = "ffa" if name in ("ffa", "central_frozen_a") else "fedit"
    extra = [f"lm.lora.aggregation={aggregation}"]
    if name in FED_SERVER_LR:
        extra += [
            *FED_CLIENT,
            f"strategy.name={FED_STRATEGY[name]}",
            f"strategy.server_lr={FED_SERVER_LR[name]}",
        ]
    extra += overrides or []
    cfg = _config(Path(base) if base else None, rounds, steps, extra)
    task = LanguageModelTask(cfg)
    model = task.model()
    n = cfg.data.num_partitions
    start = time.perf_counter()
    if name == "base":
        states = [task.initial_state()] * n
    elif name == "local":
        states = [_train_alone(task, cfg, task.client_data(p), rounds * steps, p) for p in range(n)]
    elif name in ("central", "central_frozen_a"):
        pooled = np.concatenate([c.train for c in task.text.clients])
        data = ClientData(train=pooled, held_out=None, num_examples=len(pooled))
        states = [_train_alone(task, cfg, data, n * rounds * steps, 0)] * n
    elif name == "central_depth":
        pooled = np.concatenate([c.train for c in task.text.clients])
        data = ClientData(train=pooled, held_out=None, num_examples=len(pooled))
        states = [_train_alone(task, cfg, data, rounds * steps, 0, n * cfg.train.batch_size)] * n
    else:
        state, rejected = _federated(cfg)
        states = [state] * n
    seconds = time.perf_counter() - start
    row = {"variant": name, "seconds": seconds, **_summary(_client_scores(task, model, states))}
    if overrides:
        row["overrides"] = overrides
    if name in FED_SERVER_LR:
        row["rejected_updates"] = rejected
    return row


def _federated(cfg: Any) -> tuple[dict[str, np.ndarray], int]:
    """fedsys's round loop and ClientApp over an in-process grid: the final global adapter and
    how many updates the server rejected."""
    from safetensors.numpy import load_file

    from fedsys.app import client_app
    from fedsys.inprocess import InProcessGrid
    from fedsys.server.loop import run_federation

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        # error-feedback residuals of this run only (in-process runs all have run id 1)
        runtime = cfg.runtime.model_copy(update={"node_state_dir": Path(tmp) / "node-state"})
        cfg = cfg.model_copy(update={"runtime": runtime})
        grid = InProcessGrid(client_app, cfg.data.num_partitions)
        with contextlib.redirect_stderr(io.StringIO()):
            run_federation(grid, cfg, out, _Quiet(), resume=False)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        rejected = sum(len(r.get("rejected") or []) for r in rows)
        return dict(load_file(out / "model.safetensors")), rejected


class _Quiet:
    def start(self, total_rounds: int, done_rounds: int) -> None:
        pass

    def update(self, record: Any) -> None:
        pass

    def stage(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


def update_bytes(size: str) -> dict[str, Any]:
    """One client's int8 update (a realistic delta's scale) against the full fp32 model."""
    _quiet()
    from fedsys.codec import encode_update, pipeline_from_config
    from fedsys.config import CodecConfig
    from fedsys.tasks.lm.task import LanguageModelTask

    row: dict[str, Any] = {"size": size}
    for aggregation in ("fedit", "ffa"):
        cfg = _config(None, 1, 1, [f"lm.size={size}", f"lm.lora.aggregation={aggregation}"])
        task = LanguageModelTask(cfg)
        state = task.initial_state()
        generator = torch.Generator().manual_seed(0)
        delta = {k: torch.randn(v.shape, generator=generator) * 1e-3 for k, v in state.items()}
        pipeline = pipeline_from_config(CodecConfig(quantize="int8"))
        payload = encode_update(delta, pipeline, num_examples=1).payload
        full = task.model_parameters() * 4
        row[aggregation] = {
            "update_parameters": sum(int(v.size) for v in state.values()),
            "int8_update_bytes": len(payload),
            "fp32_adapter_bytes": sum(int(v.size) * 4 for v in state.values()),
            "full_model_fp32_bytes": full,
            "ratio_to_full_model": len(payload) / full,
        }
        row["model_parameters"] = task.model_parameters()
    row["ffa_over_fedit"] = row["ffa"]["int8_update_bytes"] / row["fedit"]["int8_update_bytes"]
    return row


def exactness(base: str | None, steps: int, seed: int = 0) -> dict[str, Any]:
    """One round from the same global adapter: the aggregate's B·A against mean(B_i·A_i)."""
    _quiet()
    from fedsys.tasks.lm.aggregation import product_gap, weighted_mean
    from fedsys.tasks.lm.task import LanguageModelTask

    out: dict[str, Any] = {}
    for aggregation in ("fedit", "ffa"):
        cfg = _config(
            Path(base) if base else None,
            1,
            steps,
            [f"lm.lora.aggregation={aggregation}", f"runtime.seed={seed}"],
        )
        task = LanguageModelTask(cfg)
        model = task.model()
        start = {k: torch.from_numpy(v) for k, v in task.initial_state().items()}
        states, weights = [], []
        for pid in range(cfg.data.num_partitions):
            task.load_state(model, start)
            data = task.client_data(pid)
            task.train(
                model,
                data,
                cfg.train,
                seed=pid,
                device=CPU,
                proximal_mu=0.0,
                work_fraction=1.0,
                partition_id=pid,
            )
            states.append({k: v.clone() for k, v in task.state_of(model).items()})
            weights.append(float(data.num_examples))
        frozen = {
            n.replace(".default.", "."): p.detach().clone()
            for n, p in model.named_parameters()
            if ".lora_A." in n
        }
        gap = product_gap(states, weights, weighted_mean(states, weights), frozen)
        out[aggregation] = {"max_abs": gap.max_abs, "relative": gap.relative}
    return out


def _overrides_by_variant(specs: list[str], names: list[str]) -> dict[str, list[str]]:
    """``--override [VARIANT:]KEY=VALUE``: for one variant, or for every variant run."""
    out: dict[str, list[str]] = {n: [] for n in names}
    for spec in specs:
        key = spec.split("=", 1)[0]
        target, setting = (spec.split(":", 1)) if ":" in key else ("", spec)
        if "=" not in setting:
            raise SystemExit(f"--override {spec!r}: expected [VARIANT:]KEY=VALUE")
        if target and target not in VARIANTS:
            raise SystemExit(f"--override {spec!r}: unknown variant {target!r}")
        for n in [target] if target else names:
            if n in out:
                out[n].append(setting)
    return out


def _reused_rows(
    reference: Path, wanted: list[str], rounds: int, steps: int, seed: int
) -> dict[str, Any]:
    """Rows of an earlier report for the variants not run now (same rounds, steps and seed:
    the seed picks the clients and their held-out text)."""
    if not wanted:
        return {}
    if not reference.exists():
        raise SystemExit(f"--reference {reference} does not exist; also run {wanted}")
    old = json.loads(reference.read_text())
    ran = (old.get("rounds"), old.get("local_steps"), old.get("seed", 0))
    if ran != (rounds, steps, seed):
        raise SystemExit(
            f"--reference {reference} ran {ran[0]} x {ran[1]} with seed {ran[2]}, "
            f"not {rounds} x {steps} with seed {seed}; also run {wanted}"
        )
    missing = [n for n in wanted if n not in old["claim"]]
    if missing:
        raise SystemExit(f"--reference {reference} has no rows for {missing}; run them")
    return {n: {**old["claim"][n], "reused_from": str(reference)} for n in wanted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=80)
    parser.add_argument("--steps", type=int, default=1, help="local steps per round")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-base-bytes", action="store_true", help="no lm_base (~100M) sizes")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="comma-separated variants to run; the others' rows (base and central are needed "
        "for the recovered share) are read from --reference, and exactness and bytes are "
        "skipped unless every variant runs",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="runtime.seed for pre-training and every variant: it picks the public and client "
        "packages, each client's held-out chunks, the batches and the seeded A",
    )
    parser.add_argument("--reference", type=Path, default=OUT, help="report to reuse rows from")
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="[VARIANT:]KEY=VALUE",
        help="a config override for one variant (e.g. ffa:lm.lora.init_a=orthogonal) or, "
        "without a prefix, for every variant run; repeatable",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    names = [n for n in args.variants.split(",") if n]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
    everything = set(names) == set(VARIANTS)
    seeded = [f"runtime.seed={args.seed}"]
    overrides = _overrides_by_variant(args.override, names)
    needed = [n for n in VARIANTS if n not in names and n in ("base", "local", "central")]
    reused = _reused_rows(args.reference, needed, args.rounds, args.steps, args.seed)
    _quiet()
    from fedsys.tasks.lm.pretrain import pretrain

    report: dict[str, Any] = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "rounds": args.rounds,
        "local_steps": args.steps,
        "seed": args.seed,
    }
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        start = time.perf_counter()
        pre = pretrain(_config(None, 1, 1, seeded), base)
        report["pretrain"] = {
            "seconds": time.perf_counter() - start,
            "public_perplexity": pre.public_perplexity,
            "steps": pre.steps,
        }
        with ProcessPoolExecutor(args.workers) as pool:
            futures = {
                n: pool.submit(
                    variant, n, str(base), args.rounds, args.steps, seeded + overrides[n]
                )
                for n in names
            }
            if everything:
                gaps = pool.submit(exactness, str(base), EXACTNESS_STEPS, args.seed)
                sizes = ["lm_tiny"] if args.skip_base_bytes else ["lm_tiny", "lm_base"]
                bytes_rows = [pool.submit(update_bytes, s) for s in sizes]
            report["claim"] = {**reused, **{n: f.result() for n, f in futures.items()}}
            if everything:
                report["exactness"] = gaps.result()
                report["bytes"] = [f.result() for f in bytes_rows]
    claim = report["claim"]
    b, c = claim["base"]["mean_perplexity"], claim["central"]["mean_perplexity"]
    for fed in ("fedit", "ffa", "central_frozen_a"):
        if fed not in claim:
            continue
        f = claim[fed]["mean_perplexity"]
        claim[fed]["recovered_of_central_gain"] = (b - f) / (b - c) if b != c else math.nan
        claim[fed]["beats_local"] = f < claim["local"]["mean_perplexity"]
        claim[fed]["beats_local_worst"] = (
            claim[fed]["worst_perplexity"] < claim["local"]["worst_perplexity"]
        )
    report["fed_server_lr"] = FED_SERVER_LR
    report["fed_strategy"] = FED_STRATEGY
    report["fed_client"] = FED_CLIENT
    report["overrides"] = {n: o for n, o in overrides.items() if o}
    report["exactness_steps"] = EXACTNESS_STEPS
    report["strategy"] = _config(None, 1, 1).strategy.name
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for n in (*VARIANTS, *(n for n in claim if n not in VARIANTS)):
        if n not in claim:
            continue
        row = claim[n]
        share = row.get("recovered_of_central_gain")
        print(
            f"{n:16s} mean ppl {row['mean_perplexity']:8.3f}  "
            f"worst {row['worst_perplexity']:8.3f}  acc {row['mean_accuracy']:.4f}"
            + (f"  recovered {share:.1%}" if share is not None else "")
            + ("  (reused)" if "reused_from" in row else "")
        )
    if everything:
        print(json.dumps({"exactness": report["exactness"], "bytes": report["bytes"]}, indent=1))


if __name__ == "__main__":
    main()
