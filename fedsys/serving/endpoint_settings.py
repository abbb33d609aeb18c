"""Settings of the inference endpoint: one pydantic model, handed to every worker as JSON.

``fedsys serve`` builds a ServeSettings from its options; with several uvicorn workers each
worker process rebuilds the app from the JSON in ``FEDSYS_SERVE_SETTINGS``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from fedsys.errors import ConfigError
from fedsys.serving.generation.limits import GenerationLimits

SETTINGS_ENV = "FEDSYS_SERVE_SETTINGS"
API_KEYS_ENV = "FEDSYS_API_KEYS"  # comma-separated, an alternative to --api-keys FILE


class ServeSettings(BaseModel):
    """Everything one endpoint worker needs; secrets are read from files or the environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    registry: Path = Field(description="Registry root (DIR/<name>/versions/<n>/...).")
    publisher_key: Path | None = Field(
        default=None,
        description="Ed25519 public key trusted for artifacts; default <registry>/publisher.pub.",
    )
    api_keys_file: Path | None = Field(
        default=None, description="One API key per line; predict then needs X-API-Key."
    )
    api_keys_env: str = Field(
        default=API_KEYS_ENV, description="Env var with comma-separated API keys (optional)."
    )
    publish_token_env: str = Field(
        default="FEDSYS_PUBLISH_TOKEN",
        description="Env var holding the bearer token for publish and rollback; unset: refused.",
    )
    audit_log: Path | None = Field(
        default=None, description="JSON-lines audit log; default <registry>/audit.jsonl."
    )
    variant: Literal["fp32", "int8"] = Field(
        default="fp32", description="Serve the int8 copy where a version has one."
    )
    default_variant: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_]{1,32}$",
        description="Compressed variant answering requests that name none, where the "
        "active version has it (else fp32 or the int8 copy); ?variant= picks any per request.",
    )
    max_batch_size: int = Field(default=32, ge=1, description="Rows per model call; 1: off.")
    max_wait_ms: float = Field(
        default=2.0, ge=0, le=1000, description="Longest a request waits for batch-mates."
    )
    max_instances: int = Field(default=1024, ge=1, description="Rows in one predict request.")
    max_body_bytes: int = Field(default=16 << 20, ge=1024, description="Predict body limit.")
    max_publish_bytes: int = Field(
        default=1 << 30, ge=1024, description="Publish (multipart) body limit."
    )
    poll_interval_s: float = Field(
        default=0.2, gt=0, le=60, description="How often a worker checks the active pointers."
    )
    torch_threads: int | None = Field(
        default=1,
        ge=1,
        description="Intra-op threads for inference (None: leave the process's setting).",
    )
    switch_interval_s: float | None = Field(
        default=0.0005,
        gt=0,
        description="sys.setswitchinterval for the worker (None: leave it). Python's 5 ms "
        "default lets a busy event loop hold the GIL while the inference thread waits to "
        "resume between torch ops.",
    )
    freeze_gc: bool = Field(
        default=True,
        description="After start-up, move every object alive (torch, the app, the loaded "
        "models) into gc's permanent generation. Otherwise each full collection walks the "
        "hundreds of thousands of objects torch creates and stalls all requests for 100-200 ms.",
    )
    generation: GenerationLimits = Field(
        default_factory=GenerationLimits,
        description="Limits of text generation (language-model versions), per base model.",
    )
    workers: int = Field(default=1, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)

    @property
    def publisher_key_path(self) -> Path:
        return self.publisher_key or self.registry / "publisher.pub"

    @property
    def audit_path(self) -> Path:
        return self.audit_log or self.registry / "audit.jsonl"

    def api_keys(self) -> frozenset[str]:
        """Keys accepted in X-API-Key (empty: predict is open)."""
        keys: set[str] = set()
        if self.api_keys_file is not None:
            try:
                text = self.api_keys_file.read_text()
            except OSError as exc:
                raise ConfigError(
                    f"cannot read API keys file {self.api_keys_file}: {exc.strerror}"
                ) from None
            keys.update(line.strip() for line in text.splitlines())
        keys.update(k.strip() for k in os.environ.get(self.api_keys_env, "").split(","))
        keys.discard("")
        return frozenset(k for k in keys if not k.startswith("#"))

    def publish_token(self) -> str | None:
        """The bearer token for publish/rollback, or None when publishing over HTTP is off."""
        token = os.environ.get(self.publish_token_env, "").strip()
        return token or None
