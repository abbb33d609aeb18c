"""The ``compress`` config section (kept free of torch so that ``fedsys.config`` stays light)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from fedsys.config_section import Section

VariantName = Literal["int8", "pruned", "distilled", "lowrank", "pruned_int8"]
ALL_VARIANTS: tuple[VariantName, ...] = ("int8", "pruned", "distilled", "lowrank", "pruned_int8")
ServedVariant = Literal["fp32", "int8", "pruned", "distilled", "lowrank", "pruned_int8"]


class StudentConfig(Section):
    """The distilled variant's architecture; unset fields follow the teacher, narrowed."""

    name: Literal["logreg", "mlp", "cnn1d", "cnn_mnist", "resnet_cifar"] | None = Field(
        default=None, description="Model name (default: the teacher's)."
    )
    channels: int | None = Field(default=None, ge=1, description="Conv width (default: scaled).")
    hidden: list[int] | None = Field(default=None, description="MLP widths (default: scaled).")
    width_factor: float = Field(
        default=0.25, gt=0, le=1, description="Teacher width x this, where unset."
    )

    @model_validator(mode="after")
    def _check_hidden(self) -> StudentConfig:
        if self.hidden is not None and any(h < 1 for h in self.hidden):
            raise ValueError(f"compress.student.hidden must be positive, got {self.hidden}")
        return self


class LMCompressConfig(Section):
    """How language-model variants (int8 weight-only, low-rank) are judged and timed."""

    eval_chunks: int = Field(
        default=64,
        ge=1,
        description="Held-out text chunks (the clients' test text, pooled) "
        "that every variant's perplexity is measured on.",
    )
    finetune_steps: int = Field(
        default=0,
        ge=0,
        description="Next-token steps on the public text after low-rank factorisation (0: none).",
    )
    prompt_tokens: int = Field(default=32, ge=1, description="Prompt length when timing.")
    new_tokens: int = Field(default=16, ge=1, description="Tokens generated per timed call.")
    throughput_batch: int = Field(default=32, ge=1, description="Prompts per throughput call.")
    repeats: int = Field(default=3, ge=1, description="Timed generations per figure.")


class CompressConfig(Section):
    """Which compressed variants to build from each published version, and their budgets."""

    enabled: bool = Field(
        default=False,
        description="Build the variants in the background after each publish of a training "
        "run (needs a public split: data.public_fraction, default 0.1 then, or public_path).",
    )
    variants: list[VariantName] = Field(default_factory=lambda: list(ALL_VARIANTS))
    default_variant: ServedVariant = Field(
        default="fp32", description="What the endpoint serves when a request names no variant."
    )
    accuracy_budget: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="Largest accepted loss of test accuracy against fp32 (0.01 = 1 point); "
        "a variant that loses more is refused, not published.",
    )
    perplexity_budget: float = Field(
        default=0.05,
        ge=0,
        description="Language models: largest accepted relative rise of held-out perplexity "
        "against the merged fp32 model (0.05 = 5%); a variant that rises more is refused.",
    )
    lm: LMCompressConfig = Field(default_factory=LMCompressConfig)
    calibration_samples: int = Field(
        default=512, ge=1, description="Public samples that calibrate static int8."
    )
    prune_fraction: float = Field(
        default=0.5, gt=0, lt=1, description="Share of channels/neurons removed per layer."
    )
    prune_criterion: Literal["l1", "l2"] = Field(
        default="l1", description="Norm of a channel's weights that ranks it for removal."
    )
    finetune_epochs: int = Field(
        default=10, ge=0, description="Recovery epochs on the public split (pruned, lowrank)."
    )
    student: StudentConfig = Field(default_factory=StudentConfig)
    distill_epochs: int = Field(default=40, ge=1, description="Student epochs (public split).")
    temperature: float = Field(default=4.0, gt=0, description="Softmax temperature (Hinton).")
    distill_alpha: float = Field(
        default=0.9, ge=0, le=1, description="Weight of the soft-label loss; the rest: hard labels."
    )
    mixup_copies: int = Field(
        default=4,
        ge=0,
        description="Rounds of mixtures of public rows added to the transfer set (labelled "
        "by the teacher only); 0: the public rows alone.",
    )
    lr: float = Field(default=2e-3, gt=0, description="Adam step size for every tuning run.")
    batch_size: int = Field(default=64, ge=1)
    lowrank_rank: int | None = Field(
        default=None, ge=1, description="Fixed rank per factorised layer (else by energy)."
    )
    lowrank_energy: float = Field(
        default=0.9, gt=0, le=1, description="Kept share of squared singular values."
    )
    wait_at_end_seconds: float = Field(
        default=900.0,
        ge=0,
        description="How long the end of a training run waits for the last compression.",
    )
    latency_repeats: int = Field(default=30, ge=1, description="Timed calls per latency figure.")

    @model_validator(mode="after")
    def _check_default(self) -> CompressConfig:
        if self.default_variant != "fp32" and self.default_variant not in self.variants:
            raise ValueError(
                f"compress.default_variant={self.default_variant!r} is not among "
                f"compress.variants {self.variants}"
            )
        return self
