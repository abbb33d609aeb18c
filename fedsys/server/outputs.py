"""The run's files: config.yaml, metrics.jsonl (one line per round), and at the end the
model, summary.json and the curves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.torch import save

from fedsys.config import ExperimentConfig, dump_config
from fedsys.fsio import atomic_write_bytes
from fedsys.safetensors_bytes import canonical
from fedsys.server.aggregate import Aggregated
from fedsys.server.evaluation import state_dict
from fedsys.server.plots import plot_curves
from fedsys.server.records import (
    RejectedUpdate,
    RoundRecord,
    RunSummary,
    read_rounds,
    write_json,
)
from fedsys.tasks import Metrics, Task


@dataclass(frozen=True)
class RunPaths:
    """Where a run writes; ``out`` is the directory given by ``--out``."""

    out: Path

    @property
    def metrics(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.out / "summary.json"

    @property
    def curves(self) -> Path:
        return self.out / "curves.png"

    @property
    def model(self) -> Path:
        return self.out / "model.safetensors"

    @property
    def config(self) -> Path:
        return self.out / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoint"


def begin_outputs(paths: RunPaths, cfg: ExperimentConfig, *, fresh: bool) -> None:
    """The output directory and config.yaml; a fresh run starts an empty metrics.jsonl."""
    paths.out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, paths.config)
    if fresh:
        paths.metrics.write_text("")


def round_record(
    agg: Aggregated, evaluation: Metrics, seconds: float, fp32_bytes: int
) -> RoundRecord:
    """The metrics line of round ``agg`` (``published_version`` is filled in by the caller);
    the task's other scores follow as ``central_<name>`` (e.g. ``central_perplexity``)."""
    result, secagg = agg.result, agg.secagg
    sizes = [r.nbytes for r in result.received]
    record = RoundRecord(
        round=agg.round,
        central_accuracy=evaluation.accuracy,
        central_loss=evaluation.loss,
        train_loss=result.metrics.get("train_loss"),
        clients=result.accepted,
        sampled=agg.sampled,
        rejected=[RejectedUpdate(node=r.node_id, reason=r.reason) for r in result.rejected],
        stragglers_dropped=result.stragglers_dropped,
        bytes_up=sum(sizes),
        client_bytes_up=sizes,
        compression_ratio=(sum(sizes) / len(sizes) / fp32_bytes) if sizes else None,
        bytes_down=agg.bytes_down_each * agg.sampled,
        seconds=seconds,
        client_train_seconds=result.metrics.get("train_seconds"),
        encode_seconds=result.metrics.get("encode_seconds"),
        decode_seconds=result.decode_seconds,
        secagg_seconds=secagg.seconds if secagg else None,
        dropped_after_masking=secagg.dropped_after_masking if secagg else None,
        secagg_aborted=secagg.aborted if secagg else None,
        clipped=result.clipped,
        aggregation_refused=agg.refused,
    )
    for key, value in evaluation.extra.items():
        setattr(record, f"central_{key}", value)
    return record


def fp32_bytes(model: dict[str, np.ndarray]) -> int:
    """The model's size with every float tensor in fp32 (the compression ratio's base)."""
    return sum(v.size * 4 if v.dtype.kind == "f" else v.nbytes for v in model.values())


def write_final_outputs(
    paths: RunPaths,
    cfg: ExperimentConfig,
    model: dict[str, np.ndarray],
    task: Task,
    task_summary: dict[str, object],
    *,
    last_round: int,
    wall_seconds: float,
    model_parameters: int,
    resumed_from: int | None,
    published_version: int | None,
) -> RunSummary:
    """model.safetensors, curves.png and summary.json, from the run's metrics lines."""
    records = read_rounds(paths.metrics)
    blob = save(
        {k: v.contiguous() for k, v in state_dict(model).items()},
        metadata={**task.weights_metadata(), "round": str(last_round)},
    )
    atomic_write_bytes(paths.model, canonical(blob))
    plot_curves(records, paths.curves, f"{cfg.name} ({cfg.strategy.name})")
    last = records[-1]
    summary = RunSummary.model_validate(
        {
            "name": cfg.name,
            "strategy": cfg.strategy.name,
            "final_accuracy": last.central_accuracy,
            "final_loss": last.central_loss,
            "best_accuracy": max(r.central_accuracy for r in records),
            "rounds": len(records),
            "updates_total": sum(r.clients for r in records),
            "bytes_up_total": sum(r.bytes_up for r in records),
            "bytes_down_total": sum(r.bytes_down for r in records),
            "wall_seconds": wall_seconds,
            "seconds_per_round": sum(r.seconds for r in records) / len(records),
            "model_parameters": model_parameters,
            "resumed_from_round": resumed_from,
            "published_version": published_version,
            "final_perplexity": (last.model_extra or {}).get("central_perplexity"),
            **task_summary,  # the task's identity (a language model: corpus and base hashes)
        }
    )
    write_json(paths.summary, summary)
    return summary
