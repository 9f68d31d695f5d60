from __future__ import annotations

from ..metrics import CONTENT_TYPE
from .base import JsonHandler


class MetricsHandler(JsonHandler):
    """``GET /metrics``: Prometheus text format (no token: nothing in it is secret)."""

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.node.metrics.render())
