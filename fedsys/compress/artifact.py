"""A variant's weight file: safetensors with a small header that says how to rebuild it.

The header (safetensors ``__metadata__``) names the format, the variant, the low-rank map
and, for int8, where each quantized layer's parts are; the architecture itself (narrower
after pruning or distillation) travels in the version's manifest as a ``ModelConfig``.
Loading builds that architecture, reshapes it, then loads or re-quantizes: no pickle.
"""

from __future__ import annotations

import json

from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from fedsys.compress.int8 import int8_module, int8_tensors
from fedsys.compress.lowrank import apply_ranks
from fedsys.config import ModelConfig
from fedsys.data.types import DatasetInfo
from fedsys.errors import ArtifactRejected, ConfigError
from fedsys.models import build_model
from fedsys.safetensors_bytes import canonical

VARIANT_FORMAT = "fedsys-variant/1"


def variant_bytes(
    module: nn.Module, *, variant: str, quantized: bool, ranks: dict[str, int]
) -> bytes:
    """The safetensors file of ``module`` (fp32, or the output of ``quantize_static``)."""
    metadata = {
        "format": VARIANT_FORMAT,
        "variant": variant,
        "quantized": "int8" if quantized else "none",
        "ranks": json.dumps(ranks, sort_keys=True),
    }
    if quantized:
        tensors, extra = int8_tensors(module)  # type: ignore[arg-type]
        metadata.update(extra)
    else:
        tensors = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    return canonical(bytes(st_save(tensors, metadata=metadata)))


def variant_metadata(data: bytes) -> dict[str, str]:
    """The header of a variant file; ArtifactRejected when it is not one."""
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        meta = header.get("__metadata__") or {}
    except (ValueError, AttributeError) as exc:
        raise ArtifactRejected(f"variant file has no readable header: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != VARIANT_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise ArtifactRejected(f"not a {VARIANT_FORMAT} file (format {found!r})")
    return {str(k): str(v) for k, v in meta.items()}


def load_variant(data: bytes, model_cfg: ModelConfig, info: DatasetInfo) -> nn.Module:
    """The ready-to-serve module (eval mode, CPU) stored in ``data`` for ``model_cfg``."""
    meta = variant_metadata(data)
    try:
        ranks = {str(k): int(v) for k, v in json.loads(meta["ranks"]).items()}
        tensors = dict(st_load(data))
        shell = apply_ranks(build_model(model_cfg, info), ranks)
        if meta["quantized"] == "int8":
            return int8_module(tensors, meta, shell, info.input_shape)
        shell.load_state_dict(tensors, strict=True)
    except (SafetensorError, KeyError, ValueError, RuntimeError, TypeError, ConfigError) as exc:
        which = meta.get("variant")
        raise ArtifactRejected(f"variant {which!r} does not fit its model: {exc}") from None
    return shell.eval()


def file_bytes(module: nn.Module) -> int:
    """Size of ``module``'s fp32 safetensors file (the baseline every variant is compared to)."""
    tensors = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    return len(st_save(tensors))


__all__ = ["VARIANT_FORMAT", "file_bytes", "load_variant", "variant_bytes", "variant_metadata"]
