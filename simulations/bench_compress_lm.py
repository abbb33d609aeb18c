"""``lm_small`` compressed: int8 weight-only and low-rank variants beside fp32, on the endpoint.

    python simulations/bench_compress.py --lm [--quick]

The base is ``lm_small`` (Llama-style, 4 layers, hidden 256, MLP 688; 3.3M parameters with the
byte tokenizer's 257 tokens), pre-trained briefly with ``fedsys pretrain``'s code on the public
split of ``configs/lm_quickstart.yaml`` (the standard library's sources, byte tokens, 128-token
chunks), so that perplexities mean something. It is published as a merged language-model
version and compressed by ``fedsys.compress.compress_version`` (int8 weight-only through
torchao; low-rank by SVD at a fixed rank, then a short next-token fine-tune on the public
text). Perplexity is on the clients' held-out text (never trained on). Two controls say what
the low-rank row owes to its fine-tune: the same factorisation without it, and the fp32 model
given the same fine-tune steps. The bench lifts the
perplexity budget so that every variant is published and measured, and marks the ones the
default budget (``compress.perplexity_budget=0.05``) refuses.

Speed, two ways, with one torch thread:

- in-process (the manifest's figures): greedy ``generate`` of 16 tokens after a 32-token
  prompt, ms per generated token at batch 1 and generated tokens/s at batch 32;
- on the endpoint: one ``fedsys serve`` serves all three forms; streamed
  ``/v1/completions`` requests (32-token prompts, 32 tokens each, ``variant`` in the body)
  one at a time (p50 request latency and inter-token p50) and from 32 concurrent clients
  (generated tokens/s through continuous batching), the variants alternated round by round so
  that load from other processes falls on all of them alike.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_generation import drive, new_registry, prompts, publish, request_body, server, summarize

from fedsys.compress.job import compress_version
from fedsys.compress.lm.measure import within_perplexity_budget
from fedsys.config import ExperimentConfig, load_config
from fedsys.registry.lm_base import tensors_sha256
from fedsys.tasks.lm.pretrain import pretrain

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "lm_quickstart.yaml"
NAME = "lm_small"
BUDGET = 0.05  # the default compress.perplexity_budget, applied to the figures
FORMS = ("fp32", "int8", "lowrank")


def settings(quick: bool) -> dict[str, Any]:
    return {
        "pretrain_steps": 20 if quick else 120,
        "lowrank_rank": 128,
        "finetune_steps": 5 if quick else 50,
        "eval_chunks": 16 if quick else 128,
        "rounds": 1 if quick else 3,
        "single_requests": 3 if quick else 8,
        "batch_requests": 32 if quick else 64,
        "concurrency": 32,
        "prompt_chars": 32,
        "max_tokens": 32,
    }


def experiment(base: Path | None, s: dict[str, Any]) -> ExperimentConfig:
    overrides = [
        "lm.size=lm_small",
        f"lm.pretrain.steps={s['pretrain_steps']}",
        "lm.pretrain.lr=0.002",
        "runtime.torch_threads=1",
        "compress.variants=[int8,lowrank]",
        f"compress.lowrank_rank={s['lowrank_rank']}",
        f"compress.lm.finetune_steps={s['finetune_steps']}",
        f"compress.lm.eval_chunks={s['eval_chunks']}",
        "compress.lm.repeats=3",
        "compress.batch_size=16",
        "compress.lr=0.0005",
        "compress.perplexity_budget=1000",  # publish every variant; the table applies 0.05
    ]
    if base is not None:
        overrides.append(f"lm.base={base}")
    return load_config(CONFIG, overrides)


def endpoint(root: Path, s: dict[str, Any]) -> dict[str, Any]:
    """Batch-1 and 32-client figures of every form through /v1/completions."""
    texts = prompts(max(s["batch_requests"], s["single_requests"]), s["prompt_chars"])
    single: dict[str, list[dict[str, Any]]] = {f: [] for f in FORMS}
    batch: dict[str, list[tuple[list[dict[str, Any]], float]]] = {f: [] for f in FORMS}

    def bodies(form: str, n: int) -> list[dict[str, Any]]:
        return [
            {**request_body(NAME, text, s["max_tokens"]), "variant": form} for text in texts[:n]
        ]

    with server(root, "--decode-batch", str(s["concurrency"])) as port:
        asyncio.run(drive(port, bodies("fp32", 2), 1, []))  # warm-up: first requests load lazily
        for _ in range(s["rounds"]):
            for form in FORMS:
                asyncio.run(drive(port, bodies(form, s["single_requests"]), 1, single[form]))
                results: list[dict[str, Any]] = []
                start = time.perf_counter()
                many = bodies(form, s["batch_requests"])
                asyncio.run(drive(port, many, s["concurrency"], results))
                batch[form].append((results, time.perf_counter() - start))
    out = {}
    for form in FORMS:
        one = summarize(single[form], 1.0)
        runs = [summarize(r, wall) for r, wall in batch[form]]
        out[form] = {
            "batch1_latency_p50_ms": one["latency_p50_ms"],
            "batch1_inter_token_p50_ms": one["inter_token_p50_ms"],
            "batch1_ttft_p50_ms": one["ttft_p50_ms"],
            "concurrent_tokens_per_s": float(np.median([r["tokens_per_s"] for r in runs])),
            "concurrent_runs": runs,
            "failed": one["failed"] + sum(r["failed"] for r in runs),
        }
    return out


def controls(model: torch.nn.Module, base: Path, cfg: ExperimentConfig) -> dict[str, Any]:
    """What the low-rank row owes to its fine-tune: the same factorisation without it, and
    the fp32 model given the same fine-tune steps (in-process perplexity only)."""
    import copy

    from fedsys.compress.lm.architecture import architecture
    from fedsys.compress.lm.artifact import load_lm_variant
    from fedsys.compress.lm.job import experiment_text
    from fedsys.compress.lm.pipeline import _finetune, build_lm_variant
    from fedsys.tasks.lm.train import evaluate_lm

    text = experiment_text(cfg, int(model.get_input_embeddings().num_embeddings))
    lm = cfg.compress.lm.model_copy(update={"finetune_steps": 0})
    plain = cfg.compress.model_copy(update={"lm": lm})
    data = build_lm_variant("lowrank", model, text.public, plain, cfg.runtime.seed)
    factorised = load_lm_variant(data, architecture(base))
    cpu = torch.device("cpu")

    def perplexity(m: torch.nn.Module) -> float:
        return evaluate_lm(m, text.heldout, batch_size=8, device=cpu).perplexity

    tuned = copy.deepcopy(model)
    _finetune(tuned, text.public, cfg.compress, cfg.runtime.seed)
    return {
        "lowrank_without_finetune": {
            "bytes": len(data),
            "perplexity": perplexity(factorised),
        },
        "fp32_with_the_same_finetune": {
            "perplexity": perplexity(tuned),
            "steps": cfg.compress.lm.finetune_steps,
        },
    }


def bench_lm_small(tmp: Path, quick: bool) -> dict[str, Any]:
    s = settings(quick)
    torch.set_num_threads(1)
    started = time.perf_counter()
    base = tmp / "lm_small-base"
    report = pretrain(experiment(None, s), base)
    pretrain_s = time.perf_counter() - started
    cfg = experiment(base, s)
    registry, key = new_registry(tmp / "registry")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True)
    state = model.state_dict()
    tensors = {k: v.detach().numpy().copy() for k, v in state.items()}
    version = publish(registry, key, NAME, str(base), tensors_sha256(state), tensors)
    started = time.perf_counter()
    outcome = compress_version(registry, NAME, version, cfg, key)
    compress_s = time.perf_counter() - started
    lm_report = outcome.report
    fp32 = lm_report.fp32  # type: ignore[union-attr]
    rows: dict[str, Any] = {"fp32": {**fp32.model_dump(), "budget": None}}
    for v in lm_report.variants:  # type: ignore[union-attr]
        verdict = within_perplexity_budget(fp32.perplexity, v.metrics.perplexity, BUDGET)
        rows[v.name] = {
            **v.metrics.model_dump(),
            "perplexity_rise": v.metrics.perplexity / fp32.perplexity - 1.0,
            "budget": "within" if verdict is None else "over",
        }
    checks = controls(model.eval(), base, cfg)
    served = endpoint(registry.root, s)
    for form, figures in served.items():
        rows.setdefault(form, {})["endpoint"] = figures
    return {
        "settings": s,
        "pretrain": {
            "steps": report.steps,
            "seconds": round(pretrain_s, 1),
            "public_perplexity": report.public_perplexity,
            "parameters": report.parameters,
        },
        "compress_seconds": round(compress_s, 1),
        "variants": rows,
        "controls": checks,
    }


def lm_table(result: dict[str, Any]) -> str:
    rows = result["variants"]
    fp32 = rows["fp32"]
    lines = [
        "| variant | bytes | x fp32 | perplexity | rise | in-process ms/token (b1) | "
        "in-process tokens/s (b32) | endpoint p50 (1 request, 32 tokens) | "
        "endpoint tokens/s (32 clients) | x fp32 | 5% budget |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for form in FORMS:
        r = rows.get(form)
        if r is None:
            continue
        ep = r["endpoint"]
        speed = ep["concurrent_tokens_per_s"] / fp32["endpoint"]["concurrent_tokens_per_s"]
        lines.append(
            f"| {form} | {r['bytes']:,} | {r['bytes'] / fp32['bytes']:.3f} | "
            f"{r['perplexity']:.3f} | {r.get('perplexity_rise', 0.0) * 100:+.1f}% | "
            f"{r['latency_p50_ms']:.2f} | {r['throughput_per_s']:,.0f} | "
            f"{ep['batch1_latency_p50_ms']:.0f} ms | {ep['concurrent_tokens_per_s']:,.0f} | "
            f"{speed:.2f} | {r['budget'] or '-'} |"
        )
    return "\n".join(lines)
