"""Config sections for what leaves training: publishing versions to the registry (and an
endpoint) and the inference endpoint ``fedsys simulate`` runs beside training."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from fedsys.config_section import Section


class PublishConfig(Section):
    """Publishing the global model to a signed, versioned registry (and an endpoint)."""

    mode: Literal["never", "every_round", "on_improvement", "at_end"] = Field(
        default="never",
        description="every_round; on_improvement: when central accuracy beats the best so "
        "far; at_end: after the last round.",
    )
    registry: Path | None = Field(
        default=None, description="Local registry directory (default <out>/registry)."
    )
    endpoint: str | None = Field(
        default=None, description="Also POST each version to this endpoint (http://host:8080)."
    )
    token_env: str = Field(
        default="FEDSYS_PUBLISH_TOKEN",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the endpoint's bearer token.",
    )
    signing_key: Path | None = Field(
        default=None,
        description="Ed25519 PEM key that signs versions (default: one kept in "
        "<out>/publisher.key; its public half goes to <registry>/publisher.pub).",
    )
    int8_copy: bool = Field(default=False, description="Add an int8 serving copy.")
    merge: bool = Field(
        default=False,
        description="Language models: publish the base with the adapter merged in (a whole "
        "model; what the int8 copy quantizes) instead of the adapter and its base's sha256.",
    )
    retries: int = Field(default=3, ge=0, description="Extra attempts per remote publish.")
    backoff_seconds: float = Field(default=0.5, ge=0, description="First retry delay; doubles.")
    timeout_seconds: float = Field(default=10.0, gt=0, description="Per HTTP request.")

    @model_validator(mode="after")
    def _endpoint_url(self) -> PublishConfig:
        if self.endpoint is not None and not self.endpoint.startswith(("http://", "https://")):
            raise ValueError(
                f"publish.endpoint must start with http:// or https://, got {self.endpoint!r}"
            )
        return self


class ServeConfig(Section):
    """The inference endpoint that ``fedsys simulate`` runs beside training (serve.enabled):
    it serves the run's registry and, at the end, answers the test set over HTTP."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0: any free port.")
    workers: int = Field(
        default=1, ge=1, description="1: a thread of the simulation; more: worker processes."
    )
    max_batch_size: int = Field(default=32, ge=1, description="Rows per model call.")
    max_wait_ms: float = Field(default=2.0, ge=0, le=1000, description="Wait for batch-mates.")
