"""``GET /`` (the playground page), ``GET /pully.js`` (the browser client) and ``GET /admin``
(the admin page, docs/admin.md).

Both files ship inside the package (``pully_tornado/static/``) and are read once when the
routes are built, so serving them never touches the disk. Responses carry an ETag (Tornado
answers ``If-None-Match`` with 304) and ``Cache-Control: no-cache``: browsers revalidate, so a
node upgrade is picked up on the next load.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from ..node import Node
from .base import JsonHandler

PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/pully.js": ("pully.js", "text/javascript"),
    "/admin": ("admin.html", "text/html; charset=utf-8"),
}


class StaticHandler(JsonHandler):
    """Serves one packaged file; errors (405 for other methods) keep the JSON error shape."""

    def initialize(self, node: Node, body: bytes = b"", content_type: str = "") -> None:
        super().initialize(node)
        self.body = body
        self.content_type = content_type

    def get(self) -> None:
        self.set_header("Content-Type", self.content_type)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        if self.content_type == "text/javascript":
            # the client is public code: an app's page on another origin may import it (the
            # WebSocket it then opens is still checked against PULLY_ALLOWED_ORIGINS)
            self.set_header("Access-Control-Allow-Origin", "*")
        self.finish(self.body)

    def head(self) -> None:
        self.get()


def read_static(name: str) -> bytes:
    """A file of ``pully_tornado/static``; raises ``FileNotFoundError`` if it is not packaged."""
    return resources.files("pully_tornado").joinpath("static", name).read_bytes()


def routes(node: Node) -> list[tuple[str, Any, dict[str, Any]]]:
    """The playground page at ``/``, the browser client at ``/pully.js``, the admin page."""
    return [
        (path, StaticHandler, {"node": node, "body": read_static(name), "content_type": ctype})
        for path, (name, ctype) in PAGES.items()
    ]
