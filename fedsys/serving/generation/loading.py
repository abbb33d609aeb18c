"""A local Hugging Face causal-LM directory (``config.json``, weights, tokenizer files) as a
model and tokenizer on CPU; nothing is fetched from a hub."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedsys.errors import ArtifactRejected


@dataclass(frozen=True)
class CausalLM:
    """A loaded base: the module (eval mode), its tokenizer and what generation needs."""

    model: nn.Module
    tokenizer: Any
    source: str
    context_length: int
    eos_token_ids: frozenset[int]
    vocab_size: int

    @property
    def chat_template(self) -> str | None:
        template = getattr(self.tokenizer, "chat_template", None)
        return template if isinstance(template, str) and template else None


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ArtifactRejected(f"no usable tokenizer in {directory}: {exc}") from None


def load_causal_lm(directory: Path, *, dtype: torch.dtype = torch.float32) -> CausalLM:
    """The model and tokenizer in ``directory``; ArtifactRejected names what is missing."""
    _quiet()
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ArtifactRejected(
            f"{directory} is not a Hugging Face model directory (no config.json)"
        )
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(directory), local_files_only=True, dtype=dtype
        )
    except (OSError, ValueError) as exc:
        raise ArtifactRejected(f"cannot load the causal LM in {directory}: {exc}") from None
    tokenizer = load_tokenizer(directory)
    return from_module(model, tokenizer, source=str(directory))


def from_module(model: nn.Module, tokenizer: Any, *, source: str) -> CausalLM:
    """Wrap an already loaded model (e.g. a merged one built in this process)."""
    config = model.config
    eos: set[int] = set()
    for holder in (config, getattr(model, "generation_config", None), tokenizer):
        value = getattr(holder, "eos_token_id", None)
        if isinstance(value, int):
            eos.add(value)
        elif isinstance(value, list | tuple):
            eos.update(int(v) for v in value)
    context = int(getattr(config, "max_position_embeddings", 0) or 2048)
    vocab = int(model.get_input_embeddings().num_embeddings)  # type: ignore[operator]
    return CausalLM(model.eval(), tokenizer, source, context, frozenset(eos), vocab)
