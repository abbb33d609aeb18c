"""``GET /v1/models`` and ``GET /v1/models/{name}``: what the registry holds and what this
worker serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fedsys.errors import UnknownModel
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
    return {
        "name": name,
        "active_version": active,
        "served_version": served.version if served else None,
        "variant": served.variant if served else None,
        "metrics": current.metrics if current else None,
        "versions": [m.model_dump(mode="json") for m in manifests],
    }
