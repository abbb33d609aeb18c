"""Flower App components, declared in pyproject's ``[tool.flwr.app.components]``.

``flwr run .`` loads these; ``fedsys simulate`` runs the same ServerApp and ClientApp.
"""

from fedsys.client.app import app as client_app
from fedsys.server.app import make_server_app

server_app = make_server_app()

__all__ = ["client_app", "server_app"]
