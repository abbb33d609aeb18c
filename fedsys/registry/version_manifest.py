"""What a registry version is: the manifest schema and its canonical bytes.

The manifest names everything needed to rebuild and trust the model (architecture config,
input shape, classes, sha256 of the weight files) and where it came from (round, metrics,
lineage). The bytes written to ``manifest.json`` are the ones signed (``signatures.py``).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fedsys.errors import ArtifactRejected

NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
SHA256_HEX = r"^[0-9a-f]{64}$"

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


def check_name(name: str) -> str:
    """A model name usable as one path component: ``[A-Za-z0-9._-]+``, not ``.`` or ``..``."""
    if not NAME_PATTERN.fullmatch(name) or name in (".", ".."):
        raise ArtifactRejected(
            f"invalid model name {name!r}: use 1-128 of the characters A-Z a-z 0-9 . _ -"
        )
    return name


class Lineage(BaseModel):
    """How the model was made: updates aggregated, strategy, codec and secure-aggregation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clients: int = Field(ge=0, description="Updates aggregated in the published round.")
    strategy: str
    codec: dict[str, Any] = Field(default_factory=dict)
    secagg: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None


class ModelManifest(BaseModel):
    """``manifest.json`` of one registry version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    name: str
    version: int = Field(ge=1)
    model: dict[str, Any] = Field(description="ModelConfig.model_dump(mode='json').")
    input_shape: list[Annotated[int, Field(ge=1)]] = Field(min_length=1)
    num_classes: int = Field(ge=2)
    round: int = Field(ge=0)
    metrics: dict[str, FiniteFloat]
    weights_sha256: str = Field(pattern=SHA256_HEX)
    int8_sha256: str | None = Field(default=None, pattern=SHA256_HEX)
    created_at: datetime
    previous_version: int | None = Field(default=None, ge=1)
    lineage: Lineage

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return check_name(value)
        except ArtifactRejected as exc:
            raise ValueError(exc.reason) from None

    @field_validator("created_at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("created_at must carry a time zone")
        return value


def canonical_bytes(m: ModelManifest) -> bytes:
    """The exact bytes written to ``manifest.json`` and signed: sorted keys, 2-space indent."""
    return (json.dumps(m.model_dump(mode="json"), sort_keys=True, indent=2) + "\n").encode()


def parse_manifest(data: bytes) -> ModelManifest:
    """Validate manifest bytes against the schema; ArtifactRejected names the first problem."""
    try:
        return ModelManifest.model_validate_json(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ArtifactRejected(
            f"malformed manifest: {where}: {err['msg']} ({exc.error_count()} problem(s))"
        ) from None
