from __future__ import annotations

from .base import JsonHandler


class HealthHandler(JsonHandler):
    """``GET /healthz``: 200 while the node can serve, 503 while its broker is unreachable or it
    is draining; the body says which, with the node id, broker state and connection count."""

    def get(self) -> None:
        health = self.node.health()
        self.write_json(200 if health["status"] == "ok" else 503, health)
