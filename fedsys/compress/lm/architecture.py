"""A language model's architecture as a plain dict (its Hugging Face ``config.to_dict()``),
and a model built from one: what a variant's manifest records and its loader rebuilds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from fedsys.errors import ArtifactRejected


def quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]


def architecture(base_dir: Path) -> dict[str, Any]:
    """The base's ``config.json`` as a dict (what a variant's manifest records)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(base_dir), local_files_only=True)
    return dict(config.to_dict())


def build_from_architecture(arch: dict[str, Any]) -> nn.Module:
    """A causal LM of ``arch`` (a ``config.to_dict()``) on the CPU, in eval mode, for weights
    to be loaded into. Built on the CPU, not the meta device: buffers outside the state dict
    (rotary frequencies) must be computed."""
    from transformers import AutoConfig, AutoModelForCausalLM

    quiet_transformers()
    fields = dict(arch)
    try:
        config = AutoConfig.for_model(fields.pop("model_type"), **fields)
        model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactRejected(f"the variant's architecture is not buildable: {exc}") from None
    return model.eval()  # type: ignore[no-any-return]
