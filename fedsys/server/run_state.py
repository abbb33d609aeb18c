"""What a run carries from round to round, and its round trip through a checkpoint."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np
from flwr.serverapp.strategy import Strategy

from fedsys.server.checkpoint import Checkpoint
from fedsys.server.norm_bound import NormBound
from fedsys.server.replay import digests_array, digests_set
from fedsys.server.strategy_state import export_state, import_state


@dataclass
class RunState:
    """The global model, the strategy's state, the server RNG and the defences' memory."""

    strategy: Strategy
    model: dict[str, np.ndarray]  # the exact global model; replaced each round, never mutated
    rng: np.random.Generator  # draws one seed per round for Flower's node sampling
    norm_bound: NormBound  # the adaptive norm bound's reference (median accepted norm)
    seen_payloads: set[bytes] = field(default_factory=set)  # SHA-256 of every payload seen
    round: int = 0  # the last round aggregated
    elapsed_before: float = 0.0  # wall seconds of the runs this one resumes
    resumed_from: int | None = None
    started: float = field(default_factory=time.perf_counter)  # this process's run began
    virtual_seconds: float = 0.0  # fedbuff: the simulated clock at the last version

    def wall_seconds(self) -> float:
        """Seconds the run has taken so far, the runs it resumes included."""
        return self.elapsed_before + time.perf_counter() - self.started

    def seed_sampling(self) -> None:
        """Seed Flower's node sampling for this round.

        Flower's sample_nodes draws with the module-level ``random``; seeding it from the
        server RNG each round makes client selection reproducible and resumable.
        """
        random.seed(int(self.rng.integers(2**63)))

    def snapshot(self, wall_seconds: float) -> Checkpoint:
        """This round's state, to be written once the round is recorded.

        The snapshot holds references, not copies: the round loop replaces the global arrays
        and Flower's strategies replace their state arrays each round, never mutate them.
        """
        strategy_arrays, strategy_state = export_state(self.strategy)
        return Checkpoint(
            round=self.round,
            model=self.model,
            strategy_arrays=strategy_arrays,
            strategy_state=strategy_state,
            rng_state=dict(self.rng.bit_generator.state),
            extra={
                "wall_seconds": wall_seconds,
                "norm_reference": self.norm_bound.reference,
                "virtual_seconds": self.virtual_seconds,
            },
            defense_arrays={"payload_digests": digests_array(self.seen_payloads)},
        )

    def restore(self, ckpt: Checkpoint) -> None:
        """Continue after ``ckpt``'s round (its model must match this run's layout)."""
        self.model = ckpt.model
        import_state(self.strategy, ckpt.strategy_arrays, ckpt.strategy_state)
        self.rng.bit_generator.state = ckpt.rng_state
        self.round = ckpt.round
        self.elapsed_before = float(ckpt.extra.get("wall_seconds", 0.0))
        self.virtual_seconds = float(ckpt.extra.get("virtual_seconds", 0.0))
        self.seen_payloads = digests_set(ckpt.defense_arrays.get("payload_digests"))
        reference = ckpt.extra.get("norm_reference")
        self.norm_bound.reference = float(reference) if reference is not None else None
        self.resumed_from = ckpt.round
