"""``POST /api/<method>``: the server API (docs/server-api.md), admin only.

The body is the method's params (a JSON object; ``{}`` or an empty body for none; blanks alone
are not JSON: 400). The reply is
``{"result": ...}`` with 200, or ``{"error": {"code", "message", "problems"?}}`` with the
error's HTTP status (404 for an unknown method, 400 listing every invalid param).
"""

from __future__ import annotations

from typing import Any

import orjson
import tornado.web

from .. import protocol
from ..api.methods import error_of
from ..errors import PullyError
from ..node import Node
from .base import JsonHandler

# room beyond one message's data for the rest of a call (1,000 broadcast channel names)
EXTRA_BYTES = 256 * 1024


class ApiHandler(JsonHandler):
    """One route per method (``method``), and the catch-all ``/api/.*`` (``method`` None) that
    answers an unknown method 404 in the API's own error shape."""

    def initialize(self, node: Node, method: str | None = None) -> None:
        super().initialize(node)
        self.method = method

    async def post(self) -> None:
        self.require_admin()
        method = self.method or self.request.path.removeprefix("/api/")
        params: Any = {}
        if self.request.body:  # empty: no params; anything else must be a JSON object
            params = self.json_body(self.node.settings.max_message_bytes + EXTRA_BYTES)
            protocol.check_exact_numbers(self.request.body, None)
        result = await self.node.api.call(method, params)
        self.write_json(200, {"result": result})

    def fail(self, err: PullyError, problems: list[str] | None = None) -> None:
        self.set_status(err.status)
        if err.status == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="pully"')
        self.finish(orjson.dumps({"error": error_of(err)}))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, PullyError):
            self.fail(exc)
            return
        if status_code == 405:
            self.set_header("Allow", "POST")
        code = {405: "method_not_allowed"}.get(status_code, "internal")
        message = exc.reason if isinstance(exc, tornado.web.HTTPError) and exc.reason else (
            "use POST" if status_code == 405 else "internal error"
        )  # fmt: skip
        self.set_status(status_code)
        self.finish(orjson.dumps({"error": {"code": code, "message": message}}))
