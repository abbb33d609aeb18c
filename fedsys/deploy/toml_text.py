"""TOML literals for the files and flags the daemons hand to Flower.

The daemons write a few ``key = value`` lines (``config.toml``, a minimal ``pyproject.toml``)
and the SuperNode's ``--node-config`` (``key=value`` pairs that Flower parses as TOML); one
value at a time is all they need.
"""

from __future__ import annotations

import json


def toml_value(value: str | bool | int) -> str:
    """A TOML literal: booleans and integers as such, strings as JSON strings (a JSON
    string, control characters escaped, is a valid TOML basic string)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value)
