"""Config sections for hostile clients: the server's defence and simulated Byzantine clients."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedsys.config_section import Section


class DefenseConfig(Section):
    """What the server does to keep one client from dominating the model (besides validation).

    The adaptive norm bound compares each update's L2 norm with ``norm_multiplier`` times the
    median norm of the updates accepted in the previous round (in a run's first round, where
    there is none, with the median of the round's own updates, decided once all are in). An
    update above the bound is rejected (``reject``) or scaled down to it (``clip``).

    The direction check (linear strategies) rejects, once the round's replies are all in, an
    update whose cosine similarity with the sum of the other accepted updates is below
    ``min_cosine`` and, when ``min_cosine_spread`` is set, more than that many robust standard
    deviations below the round's median cosine: a sign-flipped update has an honest norm but
    points against the majority, while late in training honest updates scatter around zero.
    It holds the round's validated payloads until then, so it runs only while the sampled
    clients' largest possible payloads fit in ``hold_budget_mb``.
    """

    norm_bound: Literal["adaptive", "none"] = Field(
        default="adaptive", description="Bound each update's norm relative to honest ones."
    )
    norm_multiplier: float = Field(
        default=3.0, gt=1, description="The bound is this multiple of the reference median."
    )
    norm_action: Literal["reject", "clip"] = "reject"
    direction_check: bool = Field(
        default=True,
        description="Reject updates pointing against the round's other accepted updates.",
    )
    min_cosine: float = Field(
        default=0.0,
        ge=-1,
        lt=1,
        description="Least cosine similarity between an update and the sum of the others.",
    )
    min_cosine_spread: float = Field(
        default=0.0,
        ge=0,
        description="When > 0 (e.g. 3), an update below min_cosine is rejected only when it "
        "also lies this many robust standard deviations (1.4826 x MAD) below the round's "
        "median cosine: fewer honest updates refused late in training, more sign flips "
        "let through under a large attacking share; 0 (default): the fixed min_cosine alone.",
    )
    hold_budget_mb: int = Field(
        default=256,
        ge=0,
        description="The direction check holds a round's payloads until it ends; it runs when "
        "the sampled clients' largest possible payloads fit in this many MiB.",
    )
    max_num_examples: int = Field(
        default=10_000_000,
        ge=1,
        le=1 << 53,
        description="Largest aggregation weight (num-examples) one update may claim; a node "
        "that declared its training-set size (with its first update) may claim no more than that.",
    )


AttackName = Literal[
    "sign_flip",
    "scale",
    "gaussian",
    "nan",
    "inf",
    "overflow",
    "huge_weight",
    "nan_weight",
    "replay",
    "wrong_shape",
    "bomb",
]


class AttackConfig(Section):
    """Simulation only: a share of the virtual clients misbehaves (robustness studies).

    The malicious partitions are drawn once from ``runtime.seed``. Deployed client daemons
    ignore this section: an honest node never attacks because a server asked it to.
    """

    behaviour: AttackName | None = Field(
        default=None, description="What the malicious clients do; None: nobody attacks."
    )
    fraction: float = Field(default=0.0, ge=0, le=1, description="Share of clients.")
    factor: float = Field(default=10.0, description="'scale': the delta is multiplied by it.")
    noise_std: float = Field(default=1.0, gt=0, description="'gaussian': noise std per value.")

    @property
    def active(self) -> bool:
        return self.behaviour is not None and self.fraction > 0
