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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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


class LanguageModelVersion(BaseModel):
    """What a language-model version is: a LoRA adapter over a base, or merged weights.

    The version's ``model.safetensors`` holds the adapter's tensors (peft's names, as
    ``get_peft_model_state_dict`` returns them) when ``kind`` is ``adapter``, or every tensor
    of the model when ``merged``. The base is a Hugging Face causal-LM directory (config,
    weights, tokenizer), named by ``base`` (absolute, or relative to the registry root) and
    proven by ``base_sha256`` (sha256 over its tensors, see ``fedsys.registry.lm_base``);
    a merged version takes its architecture and tokenizer from the base directory.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["adapter", "merged"]
    base: str = Field(min_length=1, description="Hugging Face base directory.")
    base_sha256: str = Field(pattern=SHA256_HEX)
    adapter_config: dict[str, Any] | None = Field(
        default=None, description="peft LoraConfig.to_dict() of an adapter version."
    )

    @model_validator(mode="after")
    def _adapter_has_config(self) -> LanguageModelVersion:
        if (self.kind == "adapter") != (self.adapter_config is not None):
            raise ValueError("adapter_config is required for kind 'adapter' and only then")
        return self


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
    language_model: LanguageModelVersion | None = Field(
        default=None,
        description="Set for a causal language model (input_shape: [context length], "
        "num_classes: vocabulary size); served by /v1/completions, not :predict.",
    )

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
    data = m.model_dump(mode="json")
    if data.get("language_model") is None:  # a classifier's manifest reads as it always did
        data.pop("language_model", None)
    return (json.dumps(data, sort_keys=True, indent=2) + "\n").encode()


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
