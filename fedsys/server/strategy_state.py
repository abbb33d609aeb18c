"""Export and restore the mutable state of a Flower strategy without pickle.

Flower's strategies keep their state as plain attributes (FedAdam's ``m_t``/``v_t`` dicts,
FedAvgM's momentum list, the adaptive DP wrapper's clipping norm). No Flower API exposes that
state, so this module walks the attributes by hand: arrays go into safetensors, scalars into
JSON. Anything else (callables, a DP accountant) is left as constructed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp.strategy import Strategy

Scalar = int | float | bool | str | None


def _is_ndarray_dict(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in value.items()
    )


def _is_ndarray_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, np.ndarray) for v in value)


def export_state(
    strategy: Strategy, prefix: str = ""
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays (flat names) and a JSON-able description of every restorable attribute."""
    arrays: dict[str, np.ndarray] = {}
    described: dict[str, Any] = {}
    for name, value in vars(strategy).items():
        key = f"{prefix}{name}"
        if isinstance(value, Strategy):
            sub_arrays, sub_desc = export_state(value, prefix=f"{key}.")
            arrays.update(sub_arrays)
            described[name] = {"kind": "strategy", "attrs": sub_desc}
        elif isinstance(value, np.ndarray):
            arrays[key] = value
            described[name] = {"kind": "ndarray"}
        elif isinstance(value, ArrayRecord):
            for k, arr in value.items():
                arrays[f"{key}/{k}"] = arr.numpy()
            described[name] = {"kind": "arrayrecord", "keys": list(value.keys())}
        elif _is_ndarray_dict(value):
            for k, arr in value.items():
                arrays[f"{key}/{k}"] = arr
            described[name] = {"kind": "dict", "keys": list(value.keys())}
        elif _is_ndarray_list(value) and value:
            for i, arr in enumerate(value):
                arrays[f"{key}/{i}"] = arr
            described[name] = {"kind": "list", "length": len(value)}
        elif isinstance(value, int | float | bool | str) or value is None:
            described[name] = {"kind": "scalar", "value": value}
    return arrays, described


def import_state(
    strategy: Strategy, arrays: dict[str, np.ndarray], described: dict[str, Any], prefix: str = ""
) -> None:
    """Inverse of :func:`export_state` on a freshly built strategy of the same configuration."""
    for name, desc in described.items():
        key = f"{prefix}{name}"
        kind = desc["kind"]
        if kind == "strategy":
            import_state(getattr(strategy, name), arrays, desc["attrs"], prefix=f"{key}.")
        elif kind == "ndarray":
            setattr(strategy, name, arrays[key])
        elif kind == "arrayrecord":
            setattr(
                strategy,
                name,
                ArrayRecord({k: Array(arrays[f"{key}/{k}"]) for k in desc["keys"]}),
            )
        elif kind == "dict":
            setattr(strategy, name, {k: arrays[f"{key}/{k}"] for k in desc["keys"]})
        elif kind == "list":
            setattr(strategy, name, [arrays[f"{key}/{i}"] for i in range(desc["length"])])
        elif kind == "scalar":
            setattr(strategy, name, desc["value"])
