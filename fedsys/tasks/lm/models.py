"""The frozen base: a Llama-style model of a named size, or a local Hugging Face checkpoint.

Named sizes are ``transformers`` configs (nothing is written by hand but the table); a
checkpoint directory is loaded with ``local_files_only`` so a run never reaches a hub. The
base's identity is the sha256 of its tensors (names, dtypes, shapes, bytes, in name order), the
same however the file was written, so every node can prove it holds the server's base.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedsys.errors import ConfigError
from fedsys.lm_config import LMSize

# Llama-style widths: hidden, MLP, layers, heads (~0.5M, ~3M, ~100M parameters at 257 tokens).
SIZES: dict[str, dict[str, Any]] = {
    "lm_tiny": {
        "hidden_size": 128,
        "intermediate_size": 352,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    },
    "lm_small": {
        "hidden_size": 256,
        "intermediate_size": 688,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
    },
    "lm_base": {
        "hidden_size": 768,
        "intermediate_size": 2048,
        "num_hidden_layers": 14,
        "num_attention_heads": 12,
    },
}


@dataclass(frozen=True)
class BaseModel:
    """The loaded base and its identity."""

    model: nn.Module
    sha256: str
    source: str  # "lm_tiny" or the checkpoint directory


def _quiet_transformers() -> None:
    """transformers 5 draws a progress bar for every load; a run loads many times."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def llama_config(size: LMSize, vocab_size: int, max_positions: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        bos_token_id=vocab_size - 1,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        **SIZES[size],
    )


def build_named(size: LMSize, vocab_size: int, max_positions: int, seed: int) -> nn.Module:
    """A freshly initialised model of a named size (seeded: the same weights on every node)."""
    _quiet_transformers()
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(llama_config(size, vocab_size, max_positions))
    return model


def load_checkpoint(directory: Path) -> nn.Module:
    """Any local causal-LM checkpoint directory (``config.json`` + weights), fp32, on CPU."""
    _quiet_transformers()
    if not (directory / "config.json").is_file():
        raise ConfigError(
            f"lm.base={str(directory)!r} is not a Hugging Face checkpoint directory "
            "(no config.json); write one with `fedsys pretrain --out DIR`"
        )
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(directory), local_files_only=True, dtype=torch.float32
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"lm.base={str(directory)!r} could not be loaded: {exc}") from None
    return model  # type: ignore[no-any-return]


def weights_sha256(model: nn.Module) -> str:
    """sha256 over every tensor of the state dict in name order (name, dtype, shape, bytes):
    the registry's digest, so a node's check and the endpoint's agree by construction."""
    from fedsys.registry.lm_base import tensors_sha256

    return tensors_sha256(model.state_dict())


def vocab_size_of(model: nn.Module) -> int:
    embeddings = model.get_input_embeddings()  # type: ignore[operator]
    return int(embeddings.weight.shape[0])
