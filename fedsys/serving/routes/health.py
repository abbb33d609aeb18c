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
    """Ready when at least one model is loaded."""
    if len(state.live) == 0:
        return JSONResponse({"detail": "no model loaded yet"}, status_code=503)
    return JSONResponse({"status": "ready", "models": state.live.names()})


@router.get("/metrics")
def prometheus(state: Serving) -> Response:
    """Prometheus exposition of this worker's counters."""
    body, content_type = state.metrics.exposition()
    return Response(body, media_type=content_type)
