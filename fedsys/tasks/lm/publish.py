"""What a published language-model version holds, in the endpoint's format (the manifest's
``language_model``): the adapter over its base, or the merged weights (``publish.merge``).

An adapter version is peft's saved tensors plus their ``LoraConfig``; a merged version is every
tensor of the base with the adapter folded in, and is what the int8 copy quantizes. Either names
its base by the registry's copy (``bases/<address>``, written once per base and tokenizer), so
the endpoint loads the base, checks its sha256 and serves the version with nothing from the run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fedsys.errors import FedsysError
from fedsys.lm_config import LMConfig
from fedsys.tasks.lm.lora import ADAPTER, adapter_parameters, load_travelling_state
from fedsys.tasks.lm.models import BaseModel
from fedsys.tasks.lm.tokenizer import TextTokenizer

# A checkpoint's own tokenizer (lm.tokenizer.kind: checkpoint) is copied with the base.
TOKENIZER_FILES = (
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template*",
    "vocab*",
    "merges.txt",
    "*.model",
)


def _with_state(model: nn.Module, state: Mapping[str, np.ndarray], aggregation: str) -> nn.Module:
    """A private copy of ``model`` holding ``state`` (the process's shared model is untouched)."""
    copied = copy.deepcopy(model)
    load_travelling_state(
        copied, {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, aggregation
    )
    return copied


def adapter_tensors(
    model: nn.Module, state: Mapping[str, np.ndarray], aggregation: str
) -> dict[str, np.ndarray]:
    """Every adapter tensor (A and B, whatever travelled), under peft's saved names."""
    if aggregation == "full":
        return {k: np.asarray(v) for k, v in state.items()}
    copied = _with_state(model, state, aggregation)
    return {k: p.detach().numpy().copy() for k, p in adapter_parameters(copied, "fedit").items()}


def adapter_config(model: nn.Module) -> dict[str, Any]:
    """The adapter's ``LoraConfig.to_dict()`` as JSON (what ``peft.get_peft_config`` reads)."""
    config = model.peft_config[ADAPTER].to_dict()  # type: ignore[index, union-attr, operator]
    for key, value in config.items():
        if isinstance(value, set):  # target_modules: a set in peft, a sorted list on disk
            config[key] = sorted(value)
    loaded: dict[str, Any] = json.loads(json.dumps(config, default=str))
    return loaded


def merged_model(model: nn.Module, state: Mapping[str, np.ndarray], aggregation: str) -> nn.Module:
    """The base with the adapter folded in (peft's ``merge_and_unload``): a plain model."""
    copied = _with_state(model, state, aggregation)
    if aggregation == "full":
        return copied.eval()
    merged: nn.Module = copied.merge_and_unload()  # type: ignore[operator]
    return merged.eval()


def describe(base: BaseModel, lm: LMConfig) -> dict[str, Any]:
    """The manifest's ``model`` for a language-model version: where it came from (the base as
    configured, the adapter's settings, the tokenizer); what it *is* is ``language_model``."""
    return {
        "task": "language_model",
        "source": base.source,
        "lora": lm.lora.model_dump(mode="json"),
        "tokenizer": lm.tokenizer.kind,
    }


def _write_tokenizer(tokenizer: TextTokenizer, lm: LMConfig, directory: Path) -> None:
    """The tokenizer the run trained with: the checkpoint's own files, or ours saved."""
    directory.mkdir(parents=True, exist_ok=True)
    source = lm.base.expanduser() if lm.base is not None else None
    if lm.tokenizer.kind == "checkpoint" and source is not None:
        for pattern in TOKENIZER_FILES:
            for path in source.glob(pattern):
                if path.is_file():
                    shutil.copy2(path, directory / path.name)
    else:
        tokenizer.save(directory)


def base_address(tokenizer: TextTokenizer, lm: LMConfig, base_sha256: str) -> str:
    """The registry's name for a base directory: sha256 over the weights' sha256 and the
    tokenizer's files, so one set of weights served with two tokenizers is two bases."""
    digest = hashlib.sha256(f"{base_sha256}\0".encode())
    with tempfile.TemporaryDirectory(prefix="fedsys-tokenizer-") as tmp:
        _write_tokenizer(tokenizer, lm, Path(tmp))
        for path in sorted(Path(tmp).iterdir()):
            digest.update(f"{path.name}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()


def base_writer(
    fresh_base: Callable[[], BaseModel],
    tokenizer: TextTokenizer,
    lm: LMConfig,
    sha256: str,
) -> Callable[[Path], None]:
    """Writes the run's base as a Hugging Face directory: the weights of a freshly loaded base
    (the shared one carries the adapters, or full fine-tuning's weights), checked against
    ``sha256``, and the tokenizer the run trained with."""

    def write(directory: Path) -> None:
        base = fresh_base()
        if base.sha256 != sha256:
            raise FedsysError(
                f"the base ({base.source}) now has sha256 {base.sha256[:16]}..., the run "
                f"trained on {sha256[:16]}...: it changed during the run; not publishing it"
            )
        directory.mkdir(parents=True, exist_ok=True)
        base.model.save_pretrained(str(directory))  # type: ignore[operator]
        _write_tokenizer(tokenizer, lm, directory)

    return write
