"""Several LoRA adapters over one copy of a base, chosen per row of a batch.

``peft`` does the work: adapters are loaded side by side into one ``PeftModel`` and a forward
pass takes ``adapter_names`` (one per row, ``"__base__"`` for none), its mixed-batch inference.
Loading and deleting happen on the engine thread between steps, never during a forward pass.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fedsys.errors import ArtifactRejected

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch


class AdapterSet:
    """The base, and the adapters loaded over it by name."""

    def __init__(self, base: nn.Module) -> None:
        self.base = base
        self.peft: Any = None
        self.names: set[str] = set()

    def add(self, name: str, directory: Path) -> None:
        """Load the peft adapter saved in ``directory`` (``adapter_config.json`` and weights)."""
        if name in self.names:
            return
        from peft import PeftModel

        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(
                    self.base, str(directory), adapter_name=name, is_trainable=False
                )
            else:
                self.peft.load_adapter(str(directory), adapter_name=name, is_trainable=False)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ArtifactRejected(f"adapter {name!r} in {directory} cannot load: {exc}") from None
        self.peft.eval()
        self.names.add(name)

    def add_tensors(
        self, name: str, config: dict[str, Any], tensors: dict[str, torch.Tensor]
    ) -> None:
        """Load an adapter from its peft config (``LoraConfig.to_dict()``) and tensors (as
        ``get_peft_model_state_dict`` returns them); ArtifactRejected if they do not fit."""
        if name in self.names:
            return
        from peft import PeftModel, get_peft_config, set_peft_model_state_dict

        try:
            peft_config = get_peft_config(dict(config))
            peft_config.inference_mode = True
            if self.peft is None:
                self.peft = PeftModel(self.base, peft_config, adapter_name=name)
            else:
                self.peft.add_adapter(name, peft_config)
            result = set_peft_model_state_dict(self.peft, tensors, adapter_name=name)
        except (TypeError, ValueError, KeyError, RuntimeError) as exc:
            self._discard(name)
            raise ArtifactRejected(f"adapter {name!r} does not fit the base: {exc}") from None
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected:
            self._discard(name)
            raise ArtifactRejected(
                f"adapter {name!r} has tensors the base has no place for: {unexpected[:3]}"
            )
        self.peft.eval()
        self.names.add(name)

    def _discard(self, name: str) -> None:
        if self.peft is not None and name in getattr(self.peft, "peft_config", {}):
            with contextlib.suppress(ValueError, KeyError):
                self.peft.delete_adapter(name)

    def remove(self, name: str) -> None:
        """Drop an adapter no running sequence uses (the last one stays loaded but unused)."""
        if name not in self.names or len(self.names) == 1:
            return
        with contextlib.suppress(ValueError):
            self.peft.delete_adapter(name)
            self.names.discard(name)

    def forward(self, adapters: list[str | None], **inputs: Any) -> Any:
        """One forward pass, row ``i`` through adapter ``adapters[i]`` (None: the base)."""
        with torch.inference_mode():
            if self.peft is None:
                return self.base(**inputs)
            names = [a if a is not None else BASE for a in adapters]
            return self.peft(**inputs, adapter_names=names)
