from __future__ import annotations

from functools import cache
from typing import Any

from .. import openapi
from .base import JsonHandler


@cache
def _document() -> dict[str, Any]:
    return openapi.build()


class OpenApiHandler(JsonHandler):
    """``GET /openapi.json``: the HTTP API, generated from the marshmallow schemas."""

    def get(self) -> None:
        self.write_json(200, _document())
