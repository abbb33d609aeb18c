"""Config sections for cross-device scale: the simulated population (speed, availability),
asynchronous buffered aggregation (FedBuff) and federated evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from fedsys.config_section import Section


class SpeedConfig(Section):
    """How long each simulated client takes per task, relative to the fastest (>= 1).

    Drawn once per client from a seeded generator (the same client is always as slow), so a
    seed gives the same stragglers in every run. ``two_point``: a ``slow_fraction`` share of
    clients is ``slow_factor`` times slower; ``lognormal``: exp(N(0, sigma)) folded to >= 1;
    ``pareto``: 1 + Pareto(alpha), heavy-tailed. Time is simulated (a virtual clock), so slow
    clients cost no real time: the figures say how long the run would take on such devices.
    """

    distribution: Literal["none", "two_point", "lognormal", "pareto"] = "none"
    slow_fraction: float = Field(default=0.3, ge=0, le=1, description="two_point only.")
    slow_factor: float = Field(default=10.0, ge=1, description="two_point only.")
    sigma: float = Field(default=1.0, gt=0, description="lognormal only.")
    alpha: float = Field(default=1.5, gt=0, description="pareto only (smaller: heavier tail).")
    max_factor: float = Field(
        default=100.0, ge=1, description="Cap on any client's slowdown (a tail cut)."
    )
    task_seconds: float = Field(
        default=1.0, gt=0, description="Simulated seconds the fastest client takes per task."
    )


class AvailabilityConfig(Section):
    """Which simulated clients are online when the server samples, and who drops out.

    ``probability``: each client is online in a round with probability ``online`` (drawn per
    client and round from the seed); ``trace``: a CSV file with one line per client key,
    ``key,pattern`` where pattern is a string of 0/1 repeated over rounds (1 = online).
    Clients that are sampled drop out before replying with probability ``dropout``.
    """

    model: Literal["always", "probability", "trace"] = "always"
    online: float = Field(default=1.0, gt=0, le=1)
    trace: Path | None = None
    dropout: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> AvailabilityConfig:
        if self.model == "trace" and self.trace is None:
            raise ValueError("population.availability.trace is required when model='trace'")
        return self


class PopulationConfig(Section):
    """The simulated population: client speeds, availability, per-client state budget."""

    speed: SpeedConfig = Field(default_factory=SpeedConfig)
    availability: AvailabilityConfig = Field(default_factory=AvailabilityConfig)
    state_budget_mb: float | None = Field(
        default=None,
        gt=0,
        description="Cap on the error-feedback residuals kept for all clients together; over "
        "it the least recently used clients' residuals are dropped (they restart from zero). "
        "Default: 2 GiB or one residual per sampled client, whichever is larger.",
    )


StalenessName = Literal["constant", "inverse_sqrt", "polynomial"]


class FedBuffConfig(Section):
    """Asynchronous buffered aggregation (FedBuff, Nguyen et al. 2022).

    Up to ``concurrency`` clients train at once; every ``buffer_size`` arrivals the server
    applies the buffer's example-weighted mean delta, each update scaled by its staleness
    weight (``inverse_sqrt``: 1/sqrt(1+s), ``polynomial``: (1+s)^-exponent, ``constant``: 1,
    s = server versions since the client downloaded), times ``server_lr``; a finished
    client's slot goes to a newly sampled client at once. ``train.rounds`` counts server
    versions (aggregations). Works with FedAvg and FedProx (client side), the codec,
    encryption and resume; secure aggregation is refused (see ``ExperimentConfig``).
    """

    enabled: bool = False
    concurrency: int = Field(default=10, ge=1)
    buffer_size: int = Field(default=10, ge=1, description="K: updates per aggregation.")
    staleness: StalenessName = "inverse_sqrt"
    exponent: float = Field(default=0.5, ge=0, description="polynomial only.")
    max_staleness: int | None = Field(
        default=None, ge=0, description="Updates staler than this are rejected."
    )
    server_lr: float = Field(default=1.0, gt=0, description="Step on the buffered mean delta.")

    @model_validator(mode="after")
    def _check(self) -> FedBuffConfig:
        if self.buffer_size > self.concurrency:
            raise ValueError(
                f"fedbuff.buffer_size ({self.buffer_size}) exceeds fedbuff.concurrency "
                f"({self.concurrency}): the buffer could never fill"
            )
        return self


class FederatedEvalConfig(Section):
    """Clients evaluate the global model on their own held-out data.

    Every ``evaluate_every`` rounds (0: never) a ``fraction_evaluate`` share of the clients
    (at least ``min_evaluate_nodes``) evaluates; ``metrics.jsonl`` gets the example-weighted
    mean, the worst client and the 10th percentile next to the central figures. A client holds
    out ``holdout_fraction`` of its own partition for this (never trained on), except where
    the dataset gives each client a test share of its own (Synthetic, natural partitioner).
    """

    evaluate_every: int = Field(default=0, ge=0)
    fraction_evaluate: float = Field(default=0.1, gt=0, le=1)
    min_evaluate_nodes: int = Field(default=2, ge=1)
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)

    @property
    def enabled(self) -> bool:
        return self.evaluate_every > 0
