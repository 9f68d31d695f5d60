"""``GET /`` (the playground page) and ``GET /pully.js`` (the browser client)."""

from __future__ import annotations

from typing import Any

from ..node import Node


def routes(node: Node) -> list[tuple[str, Any, dict[str, Any]]]:
    """The static routes; none until the browser client and playground land."""
    return []
