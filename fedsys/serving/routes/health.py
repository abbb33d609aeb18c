"""``/healthz`` (the process answers), ``/readyz`` (a model is loaded) and ``/metrics``
(Prometheus exposition of this worker's counters)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from fedsys.serving.error_handlers import error_responses
from fedsys.serving.state import Serving

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503))
def readyz(state: Serving) -> JSONResponse:
    """Ready when at least one model (tensor or language model) is loaded."""
    names = sorted({*state.live.names(), *state.language_models.names()})
    if not names:
        return JSONResponse({"detail": "no model loaded yet"}, status_code=503)
    return JSONResponse({"status": "ready", "models": names})


@router.get("/metrics")
def prometheus(state: Serving) -> Response:
    """Prometheus exposition of this worker's counters."""
    body, content_type = state.metrics.exposition()
    return Response(body, media_type=content_type)
