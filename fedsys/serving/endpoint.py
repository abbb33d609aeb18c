"""The inference endpoint: ``create_app(settings)`` builds one worker's FastAPI app.

Routes (a public interface): ``POST /v1/models/{name}:predict``, ``GET /v1/models``,
``GET /v1/models/{name}``, ``POST /v1/models/{name}/versions`` (signed publish),
``POST /v1/models/{name}:rollback``, ``/healthz``, ``/readyz``, ``/metrics``; one router
per concern under ``routes/``; the OpenAI API (``/v1/completions``,
``/v1/chat/completions``) in ``openai_api/`` and the Open Inference Protocol (``/v2/...``)
in ``oip/``, each answering errors in its own protocol's shape. Every client mistake is a
4xx ``{"detail": "..."}`` naming the problem, answered by ``error_handlers`` from the class
of the error a route raised.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from fedsys.errors import ConfigError
from fedsys.serving.endpoint_settings import SETTINGS_ENV, ServeSettings
from fedsys.serving.error_handlers import add_error_handlers
from fedsys.serving.metrics import MetricsMiddleware, ServeMetrics
from fedsys.serving.oip import routes as open_inference
from fedsys.serving.openai_api import routes as openai_api
from fedsys.serving.routes import catalog, health, predict, publishing
from fedsys.serving.state import ServingState


def create_app(settings: ServeSettings) -> FastAPI:
    """A FastAPI app serving ``settings.registry``; its lifespan starts the inference thread
    and the registry poll, and stops both (no thread outlives the app)."""
    metrics = ServeMetrics()
    state = ServingState(settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="fedsys inference",
        version="1",
        summary="Serves the signed, versioned models of a fedsys registry.",
        lifespan=lifespan,
    )
    app.state.serving = state  # what the routes' ``Serving`` dependency returns
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    add_error_handlers(app)
    for module in (predict, catalog, publishing, health, openai_api, open_inference):
        app.include_router(module.router)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` worker processes: settings from the environment."""
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise ConfigError(f"{SETTINGS_ENV} is not set; start workers with `fedsys serve`")
    return create_app(ServeSettings.model_validate_json(raw))
