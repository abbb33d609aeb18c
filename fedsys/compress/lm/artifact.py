"""A language-model variant's weight file: safetensors with a header that says how to rebuild.

The header (``__metadata__``) names the format, the variant, the low-rank map and, for int8,
the block size of each quantized Linear weight; the architecture (the base's
``config.json``) is in the variant's signed manifest. Loading builds that architecture,
factorises the layers the map names, then loads the tensors or the int8 parts: no pickle.
"""

from __future__ import annotations

import json
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from fedsys.compress.lm.architecture import build_from_architecture
from fedsys.compress.lm.int8 import int8_state, load_int8_state
from fedsys.compress.lowrank import apply_ranks
from fedsys.errors import ArtifactRejected
from fedsys.safetensors_bytes import canonical

LM_VARIANT_FORMAT = "fedsys-lm-variant/1"


def lm_variant_bytes(
    model: nn.Module, *, variant: str, quantized: bool, ranks: dict[str, int]
) -> bytes:
    """The safetensors file of ``model`` (fp32 or low-rank, or int8 weight-only)."""
    metadata = {
        "format": LM_VARIANT_FORMAT,
        "variant": variant,
        "quantized": "int8_weight_only" if quantized else "none",
        "ranks": json.dumps(ranks, sort_keys=True),
    }
    if quantized:
        tensors, extra = int8_state(model)
        metadata.update(extra)
    else:
        tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return canonical(bytes(st_save(tensors, metadata=metadata)))


def _metadata(data: bytes) -> dict[str, str]:
    try:
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    except (ValueError, AttributeError) as exc:
        raise ArtifactRejected(f"variant file has no readable header: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != LM_VARIANT_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ArtifactRejected(f"not a {LM_VARIANT_FORMAT} file (format {found!r})")
    return {str(k): str(v) for k, v in meta.items()}


def load_lm_variant(data: bytes, arch: dict[str, Any]) -> nn.Module:
    """The ready-to-serve causal LM (eval mode, CPU) stored in ``data`` for ``arch``."""
    meta = _metadata(data)
    model = build_from_architecture(arch)
    try:
        ranks = {str(k): int(v) for k, v in json.loads(meta["ranks"]).items()}
        tensors = dict(st_load(data))
        apply_ranks(model, ranks)
        if meta["quantized"] == "int8_weight_only":
            return load_int8_state(model, tensors, meta)
        model.load_state_dict(tensors, strict=True)
    except (SafetensorError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        which = meta.get("variant")
        raise ArtifactRejected(f"variant {which!r} does not fit its model: {exc}") from None
    return model.eval()
