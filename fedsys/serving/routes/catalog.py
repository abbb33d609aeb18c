"""``GET /v1/models`` and ``GET /v1/models/{name}``: what the registry holds and what this
worker serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter

from fedsys.errors import UnknownModel
from fedsys.registry import ModelManifest
from fedsys.registry.variants import listed_manifest, variant_names
from fedsys.serving.error_handlers import error_responses
from fedsys.serving.generation.served import ServedLM
from fedsys.serving.guards import check_action_method, check_name
from fedsys.serving.state import Serving, ServingState

router = APIRouter()


@router.get("/v1/models")
def list_models(state: Serving) -> dict[str, Any]:
    """Every model in the registry, with its active and served versions: under ``models``
    (fedsys's listing) and as the OpenAI list (``object: list``, ``data``: one entry per
    model id a request may name, ``NAME`` and, for language models, ``NAME@VERSION``)."""
    out: list[dict[str, Any]] = []
    data: list[dict[str, Any]] = []
    for name in state.registry.models():
        manifests = state.registry.versions(name)
        served = state.current(name)
        active = state.registry.active_version(name)
        version = served.version if served else active
        entry: dict[str, Any] = {
            "name": name,
            "active_version": active,
            "served_version": served.version if served else None,
            "versions": [m.version for m in manifests],
        }
        out.append(entry)
        created = {m.version: int(m.created_at.timestamp()) for m in manifests}
        kind = {m.version: _kind(m) for m in manifests}
        data.append(
            _card(name, created.get(version or 0, 0), kind.get(version or 0, "tensor"), entry)
        )
        for lm in state.language_models.served(name):
            fields = {"name": name, "version": lm.version, "adapter": lm.adapter is not None}
            data.append(_card(lm.id, created.get(lm.version, lm.created), "language", fields))
    return {"object": "list", "data": data, "models": out}


def _kind(manifest: ModelManifest) -> str:
    return "tensor" if manifest.language_model is None else "language"


def _card(model_id: str, created: int, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI model object carrying fedsys's fields beside ``id``/``object``/``created``."""
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": "fedsys",
        "kind": kind,
        **fields,
    }


@router.get("/v1/models/{name}", responses=error_responses(404, 405))
def describe_model(name: str, state: Serving) -> dict[str, Any]:
    """Versions (manifests), the active version and its central metrics."""
    check_action_method(name)
    check_name(name)
    if name not in state.registry.models():
        raise UnknownModel(f"unknown model {name!r}")
    manifests = state.registry.versions(name)
    active = state.registry.active_version(name)
    served = state.live.get(name)
    lm = state.language_models.active(name)
    current = next((m for m in manifests if m.version == active), None)
    variants = {
        str(m.version): listed_variants(state.registry.version_dir(name, m.version))
        for m in manifests
    }
    return {
        "id": name,
        "object": "model",
        "created": int(current.created_at.timestamp()) if current else 0,
        "owned_by": "fedsys",
        "name": name,
        "active_version": active,
        "served_version": served.version if served else (lm.version if lm else None),
        "variant": served.variant if served else _lm_default(state, lm),
        "served_variants": served.served_variants() if served else _lm_forms(state, lm),
        "variants": {version: found for version, found in variants.items() if found},
        "metrics": current.metrics if current else None,
        "versions": [m.model_dump(mode="json") for m in manifests],
    }


def listed_variants(version_dir: Path) -> list[dict[str, Any]]:
    """The variants stored for a version (listing: schema checked, signature not)."""
    out = []
    for variant in variant_names(version_dir):
        m = listed_manifest(version_dir, variant)
        if m is not None:
            out.append({"variant": variant, "model": m.model, "metrics": m.metrics})
    return out


def _lm_forms(state: ServingState, lm: ServedLM | None) -> list[str]:
    """The forms a language model's active version is served in (fp32 and its variants)."""
    return [] if lm is None else state.language_models.variants_of(lm.name, lm.version)


def _lm_default(state: ServingState, lm: ServedLM | None) -> str | None:
    """What answers a request on the language model that names no variant."""
    if lm is None:
        return None
    default = state.settings.default_variant
    return default if default in _lm_forms(state, lm) else "fp32"
