"""The config as a run will use it, for ``fedsys check-config``.

Several fields default to ``None`` meaning "decided from other fields or the machine". A
plain dump prints ``null`` for them, which tells a reader nothing; here each one gets its
value, or, where only the run can decide (the output directory, free shared memory), a YAML
comment saying how it will be decided. The output still loads as the same config.
"""

from __future__ import annotations

from typing import Any

import yaml

from fedsys.config import ExperimentConfig
from fedsys.data.cache import resolve_cache_dir

# (section, key) -> comment, for the fields only the run decides.
RUN_DECIDES: dict[tuple[str, str], str] = {
    ("publish", "registry"): "<out>/registry (the run's output directory)",
    ("runtime", "node_state_dir"): (
        "<data cache>/node-state; fedsys simulate uses /dev/shm/fedsys-node-state when "
        "every client's residual fits in a quarter of its free space"
    ),
}


def resolved_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """``cfg`` as JSON-like data, with derived defaults filled in."""
    data: dict[str, Any] = cfg.model_dump(mode="json")
    data["data"]["cache_dir"] = str(resolve_cache_dir(cfg.data.cache_dir))
    data["strategy"]["drop_stragglers"] = not cfg.strategy.keeps_stragglers
    data["secagg"]["quant_bits"] = cfg.secagg.resolved_quant_bits(cfg.codec)
    return data


def _annotate(text: str, data: dict[str, Any]) -> str:
    """Append a comment to each ``key: null`` line of RUN_DECIDES (top-level sections only,
    so a key is found under its own section header)."""
    lines = text.splitlines()
    section = ""
    for i, line in enumerate(lines):
        if line and not line.startswith(" "):
            section = line.split(":", 1)[0]
            continue
        key = line.strip().split(":", 1)[0]
        comment = RUN_DECIDES.get((section, key))
        if comment is not None and data[section][key] is None:
            lines[i] = f"{line}  # {comment}"
    return "\n".join(lines) + "\n"


def resolved_yaml(cfg: ExperimentConfig) -> str:
    """YAML of :func:`resolved_dict`, commented where the run decides a value."""
    data = resolved_dict(cfg)
    return _annotate(yaml.safe_dump(data, sort_keys=False), data)
