"""The ``lm`` config section: the language-modelling task's text, tokenizer, model and LoRA.

Kept apart from ``fedsys.config`` (like ``defense_config``) so the task's modules can read their
settings without importing the whole experiment schema. Rounds, local steps, batch size,
learning rate and optimizer stay in ``train``; the number of clients in
``data.num_partitions``; the codec, encryption, secure aggregation and DP sections apply
unchanged to whatever travels (the adapters).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from fedsys.config_section import Section

LMSize = Literal["lm_tiny", "lm_small", "lm_base"]
TaskName = Literal["classification", "language_model"]
Aggregation = Literal["fedit", "ffa", "hetlora", "full"]
InitA = Literal["kaiming", "orthogonal"]


class TextConfig(Section):
    """Which text, how it is split into clients, a public share and held-out text."""

    source: Literal["stdlib", "directory", "jsonl"] = Field(
        default="stdlib",
        description="stdlib: the running interpreter's standard-library sources (no download); "
        "directory: one sub-directory of text files per client; jsonl: one file of "
        '{"client": ..., "text": ...} lines.',
    )
    path: Path | None = Field(default=None, description="The directory or .jsonl (user text).")
    partitioner: Literal["natural", "iid"] = Field(
        default="natural",
        description="natural: one client per top-level package (or per named client); "
        "iid: all client text pooled and dealt out evenly.",
    )
    public_fraction: float = Field(
        default=0.3,
        ge=0,
        lt=1,
        description="Share of the packages (stdlib) held back as the server's public data, "
        "never given to a client; what `fedsys pretrain` trains on.",
    )
    seq_len: int = Field(default=128, ge=8, le=8192, description="Tokens per training example.")
    test_fraction: float = Field(
        default=0.1, gt=0, lt=1, description="Share of each client's chunks held out."
    )
    max_client_chunks: int | None = Field(
        default=None, ge=2, description="Cap on each client's chunks (a faster demo)."
    )
    max_public_chunks: int | None = Field(
        default=None, ge=2, description="Cap on the public split's chunks."
    )

    @model_validator(mode="after")
    def _check(self) -> TextConfig:
        if self.source != "stdlib" and self.path is None:
            raise ValueError(f"lm.text.path is required for lm.text.source={self.source!r}")
        return self


class TokenizerConfig(Section):
    """Byte-level needs no training; BPE is trained on the public split."""

    kind: Literal["byte", "bpe", "checkpoint"] = Field(
        default="byte",
        description="byte: 256 byte tokens and an end-of-text token; bpe: trained with the "
        "tokenizers library on the public text; checkpoint: the tokenizer saved in lm.base.",
    )
    vocab_size: int = Field(default=2048, ge=300, le=262144, description="BPE only.")


class LoRAConfig(Section):
    """Low-rank adapters (peft) and how the server combines them."""

    aggregation: Aggregation = Field(
        default="fedit",
        description="fedit: A and B averaged separately; ffa: A frozen at a shared seeded "
        "initialisation, only B trained and sent; hetlora: per-client ranks, zero-padded to "
        "the largest and truncated back; full: every weight fine-tuned and sent (no adapters).",
    )
    rank: int = Field(default=8, ge=1, le=1024)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    init_a: InitA | None = Field(
        default=None,
        description="How every node draws the seeded A (the same on all, never sent): "
        "kaiming: peft's Kaiming-uniform; orthogonal: orthonormal rows scaled to "
        "Kaiming-uniform's expected Frobenius norm, so a frozen A (ffa) passes B's gradient "
        "through undistorted. Unset: orthogonal for ffa (measured better over three seeds, "
        "docs/benchmarks.md), kaiming otherwise. An ffa run checkpointed while kaiming was "
        "ffa's default resumes to its own A only with init_a: kaiming.",
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1
    )
    client_ranks: list[int] | None = Field(
        default=None,
        min_length=1,
        description="hetlora: ranks given to clients in turn (partition id modulo the list); "
        "each at most lm.lora.rank, the global adapter's rank.",
    )

    @model_validator(mode="after")
    def _check(self) -> LoRAConfig:
        if self.client_ranks is not None:
            if self.aggregation != "hetlora":
                raise ValueError("lm.lora.client_ranks applies only to aggregation='hetlora'")
            too_big = [r for r in self.client_ranks if not 1 <= r <= self.rank]
            if too_big:
                raise ValueError(
                    f"lm.lora.client_ranks {too_big} must lie in 1..lm.lora.rank ({self.rank})"
                )
        return self

    def a_init(self) -> InitA:
        """``init_a``, or the default for this aggregation when unset."""
        if self.init_a is not None:
            return self.init_a
        return "orthogonal" if self.aggregation == "ffa" else "kaiming"


class PretrainConfig(Section):
    """``fedsys pretrain``: central training of the base on the public split."""

    steps: int = Field(default=200, ge=1)
    batch_size: int = Field(default=16, ge=1)
    lr: float = Field(default=3e-3, gt=0)
    warmup_steps: int = Field(default=10, ge=0)


class LMConfig(Section):
    """The language-modelling task (``task: language_model``)."""

    size: LMSize = Field(
        default="lm_tiny",
        description="Named Llama-style size built from a transformers config when lm.base "
        "is not set: lm_tiny (~0.5M), lm_small (~3M), lm_base (~100M parameters).",
    )
    base: Path | None = Field(
        default=None,
        description="A local Hugging Face causal-LM checkpoint directory (e.g. from fedsys "
        "pretrain), loaded with local_files_only; nothing is fetched.",
    )
    base_sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="The base weights' sha256 every node must hold (default: the server's).",
    )
    text: TextConfig = Field(default_factory=TextConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute activations in the backward pass (less memory, more time); "
        "with train.amp on CUDA, training runs under bf16 autocast.",
    )
    max_eval_chunks: int = Field(
        default=256, ge=1, description="Held-out chunks in the central evaluation (a sample)."
    )

    @model_validator(mode="after")
    def _check(self) -> LMConfig:
        if self.tokenizer.kind == "checkpoint" and self.base is None:
            raise ValueError("lm.tokenizer.kind='checkpoint' needs lm.base (a checkpoint dir)")
        return self
