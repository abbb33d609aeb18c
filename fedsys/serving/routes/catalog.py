"""``GET /v1/models`` and ``GET /v1/models/{name}``: what the registry holds and what this
worker serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter

from fedsys.errors import UnknownModel
from fedsys.registry.variants import listed_manifest, variant_names
from fedsys.serving.error_handlers import error_responses
from fedsys.serving.guards import check_action_method, check_name
from fedsys.serving.state import Serving

router = APIRouter()


@router.get("/v1/models")
def list_models(state: Serving) -> dict[str, Any]:
    """Every model in the registry, with its active and served versions."""
    out = []
    for name in state.registry.models():
        served = state.live.get(name)
        out.append(
            {
                "name": name,
                "active_version": state.registry.active_version(name),
                "served_version": served.version if served else None,
                "versions": [m.version for m in state.registry.versions(name)],
            }
        )
    return {"models": out}


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
    current = next((m for m in manifests if m.version == active), None)
    variants = {
        str(m.version): listed_variants(state.registry.version_dir(name, m.version))
        for m in manifests
    }
    return {
        "name": name,
        "active_version": active,
        "served_version": served.version if served else None,
        "variant": served.variant if served else None,
        "served_variants": served.served_variants() if served else [],
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
