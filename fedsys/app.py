"""Flower App components, declared in pyproject's ``[tool.flwr.app.components]``.

``flwr run .`` loads these; ``fedsys simulate`` runs the same ServerApp and ClientApp.
"""

from fedsys.client.client_app import app as client_app
from fedsys.server.server_app import make_server_app

server_app = make_server_app()

__all__ = ["client_app", "server_app"]
