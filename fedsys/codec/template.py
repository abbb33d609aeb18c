"""The global model's layout (names, shapes, dtypes) that every update must match."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fedsys.codec.dtypes import FLOAT_NAMES, DTypeName, dtype_name
from fedsys.codec.manifest import Manifest
from fedsys.codec.wire import WireUpdate
from fedsys.errors import CodecError, UpdateRejected


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: DTypeName

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_NAMES


Template = Mapping[str, TensorSpec]


def template_from(
    arrays: Mapping[str, torch.Tensor | np.ndarray | TensorSpec],
) -> dict[str, TensorSpec]:
    """Specs from the global model's tensors or numpy arrays (or specs, passed through)."""
    out: dict[str, TensorSpec] = {}
    for name, arr in arrays.items():
        if isinstance(arr, TensorSpec):
            out[name] = arr
            continue
        tensor = torch.from_numpy(np.asarray(arr)) if isinstance(arr, np.ndarray) else arr
        if not isinstance(tensor, torch.Tensor):
            raise CodecError(f"template entry {name!r} is a {type(arr).__name__}")
        out[name] = TensorSpec(tuple(int(d) for d in tensor.shape), dtype_name(tensor.dtype))
    return out


def check_layout(update: WireUpdate, template: Template) -> None:
    """Names, shapes and dtypes must equal the template's; UpdateRejected says which differ."""
    if set(update.tensors) != set(template):
        missing = sorted(set(template) - set(update.tensors))[:3]
        extra = sorted(set(update.tensors) - set(template))[:3]
        raise UpdateRejected(f"tensor names differ (missing {missing}, unexpected {extra})")
    for name, t in update.tensors.items():
        spec = template[name]
        if t.shape != spec.shape or t.entry.dtype != spec.dtype:
            raise UpdateRejected(
                f"tensor {name!r} is {t.entry.dtype}{list(t.shape)}, "
                f"expected {spec.dtype}{list(spec.shape)}"
            )


def check_manifest_layout(manifest: Manifest, template: Template) -> None:
    """A parsed manifest must describe exactly the template's tensors, before any is read."""
    entries = manifest.tensors
    names = {entry.name for entry in entries}
    if len(entries) != len(template) or names != set(template):
        missing = sorted(set(template) - names)[:3]
        extra = [name[:80] for name in sorted(names - set(template))[:3]]
        raise UpdateRejected(
            f"tensor names differ (missing {missing}, unexpected {extra}; "
            f"{len(entries)} tensors, the model has {len(template)})"
        )
    for entry in entries:
        spec = template[entry.name]
        if tuple(entry.shape) != spec.shape or entry.dtype != spec.dtype:
            raise UpdateRejected(
                f"tensor {entry.name!r} is {entry.dtype}{list(entry.shape)}, "
                f"expected {spec.dtype}{list(spec.shape)}"
            )
