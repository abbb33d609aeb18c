"""Schemas of the run's outputs: one RoundRecord per line of metrics.jsonl, and summary.json."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict


class RejectedUpdate(BaseModel):
    node: int
    reason: str


class RoundRecord(BaseModel):
    """One line of metrics.jsonl.

    Non-finite floats (a diverged loss) are written as the JSON strings "NaN", "Infinity" and
    "-Infinity" and read back as floats, so every value a run can produce round-trips and a
    poisoned round never makes the file unreadable (or the run unresumable).
    """

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="strings")

    round: int
    central_accuracy: float
    central_loss: float
    train_loss: float | None
    clients: int  # updates aggregated
    sampled: int
    rejected: list[RejectedUpdate]
    stragglers_dropped: int
    bytes_up: int  # serialized update payloads received, as they travelled
    client_bytes_up: list[int] = []  # per update received
    compression_ratio: float | None = None  # mean update size / the model in fp32
    bytes_down: int  # serialized global model sent
    seconds: float
    client_train_seconds: float | None
    encode_seconds: float | None = None  # clients' mean, codec + encryption
    decode_seconds: float = 0.0  # server, all updates: verify, decrypt, decode, add
    secagg_seconds: dict[str, float] | None = None  # secure aggregation: seconds per stage
    dropped_after_masking: int | None = None  # secagg: masks removed through their shares
    secagg_aborted: str | None = None  # secagg: why the round could not be unmasked
    published_version: int | None = None  # registry version this round's model was queued as
    clipped: int = 0  # updates scaled down to the norm bound (defense.norm_action=clip)
    aggregation_refused: str | None = None  # why the round's aggregate was not taken
    publish_gap: str | None = None  # a resume found this round's version lost: what and why
    # Federated evaluation (federated_eval.evaluate_every): clients' own held-out data.
    federated_accuracy: float | None = None  # weighted by the clients' examples
    federated_loss: float | None = None
    federated_worst_accuracy: float | None = None
    federated_p10_accuracy: float | None = None  # 10th percentile over clients
    federated_median_accuracy: float | None = None
    federated_clients: int | None = None
    federated_examples: int | None = None
    # Asynchronous rounds (fedbuff): simulated wall clock and the buffered updates' staleness.
    virtual_seconds: float | None = None
    staleness_mean: float | None = None
    staleness_max: int | None = None


class ClientScore(BaseModel):
    """One client's held-out data under the final model."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="strings")

    node: int
    partition: int | None
    loss: float
    accuracy: float
    num_examples: int


class ClientEvaluation(BaseModel):
    """The final model on every client's own held-out data: the mean and the worst client."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="strings")

    clients: list[ClientScore]
    mean_loss: float
    mean_accuracy: float
    worst_accuracy: float
    mean_perplexity: float | None = None
    worst_perplexity: float | None = None
    failed: list[RejectedUpdate] = []


class RunSummary(BaseModel):
    """summary.json; a task adds its own keys (a language model: corpus and base hashes)."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="strings")

    name: str
    strategy: str
    final_accuracy: float
    final_loss: float
    best_accuracy: float
    rounds: int
    updates_total: int
    bytes_up_total: int
    bytes_down_total: int
    wall_seconds: float
    seconds_per_round: float
    model_parameters: int
    resumed_from_round: int | None
    published_version: int | None = None  # last version written to the local registry
    served_accuracy: float | None = None  # serve.enabled: the test set through the endpoint
    served_version: int | None = None  # the registry version that answered it
    final_perplexity: float | None = None  # a language model: the last round's central figure
    served_perplexity: float | None = None  # ...and its held-out text through /v1/completions
    served_loss: float | None = None  # nats per token, as final_loss


def read_rounds(path: Path) -> list[RoundRecord]:
    """All records in a metrics.jsonl file (empty if it does not exist)."""
    if not path.exists():
        return []
    return [RoundRecord.model_validate_json(line) for line in path.read_text().splitlines() if line]


def truncate_rounds(path: Path, last_round: int) -> list[RoundRecord]:
    """Drop records after ``last_round`` (rounds a killed run logged but did not checkpoint)."""
    kept = [r for r in read_rounds(path) if r.round <= last_round]
    path.write_text("".join(r.model_dump_json() + "\n" for r in kept))
    return kept


def append_round(path: Path, record: RoundRecord) -> None:
    with open(path, "a") as fh:
        fh.write(record.model_dump_json() + "\n")
        fh.flush()


def write_json(path: Path, model: BaseModel) -> None:
    """Indented JSON; non-finite floats as strings, as ``model_dump_json`` writes them."""
    path.write_text(json.dumps(json.loads(model.model_dump_json()), indent=2) + "\n")
