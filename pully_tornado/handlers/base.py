"""What every HTTP handler shares: the JSON error envelope and the admin guard."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Any

import orjson
import tornado.web

from ..errors import BadRequest, Forbidden, Internal, PullyError, TooLarge, Unauthorized
from ..node import Node

logger = logging.getLogger("pully.http")


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_body(
    status: int, code: str, message: str, problems: list[str] | None = None
) -> dict[str, Any]:
    """The one shape of every HTTP error: ``{"status", "message", "code", "error": [...]}``,
    ``error`` listing each problem (just ``message`` when there is one)."""
    return {"status": status, "message": message, "code": code,
            "error": [{"message": m} for m in (problems or [message])]}  # fmt: skip


def is_loopback(ip: str | None) -> bool:
    try:
        return ip is not None and ipaddress.ip_address(ip.split("%")[0]).is_loopback
    except ValueError:
        return False


class JsonHandler(tornado.web.RequestHandler):
    """Answers JSON; any failure becomes ``{"status", "message", "code", "error": [...]}``."""

    node: Node

    def initialize(self, node: Node) -> None:
        self.node = node

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")

    def write_json(self, status: int, body: Any) -> None:
        self.set_status(status)
        self.finish(orjson.dumps(body))

    def fail(self, err: PullyError, problems: list[str] | None = None) -> None:
        if isinstance(err, Unauthorized):
            self.set_header("WWW-Authenticate", 'Bearer realm="pully"')
        self.write_json(err.status, error_body(err.status, err.code, err.message, problems))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, PullyError):
            self.fail(exc, getattr(exc, "problems", None))
            return
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        reason = self._reason if isinstance(exc, tornado.web.HTTPError) else "internal error"
        code = _HTTP_CODES.get(status_code, "internal" if status_code >= 500 else "bad_request")
        self.write_json(status_code, error_body(status_code, code, reason))

    @classmethod
    def allowed_methods(cls) -> list[str]:
        """The HTTP methods this handler implements (for ``Allow`` on a 405)."""
        base = tornado.web.RequestHandler
        return [
            m
            for m in cls.SUPPORTED_METHODS
            if getattr(cls, m.lower()) is not getattr(base, m.lower())
        ]

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Expected failures are one line (the access log has the status); tracebacks are for
        bugs only."""
        if isinstance(value, PullyError) and not isinstance(value, Internal):
            if value.status >= 500:
                logger.warning("%s %s: %s", self.request.method, self.request.path, value.message)
            return
        super().log_exception(typ, value, tb)

    def require_admin(self) -> None:
        """Admin routes: ``Authorization: Bearer $PULLY_ADMIN_TOKEN``; with no token configured,
        loopback callers only. Raises ``Unauthorized`` (401) or ``Forbidden`` (403)."""
        token = self.node.settings.admin_token
        if not token:
            if not is_loopback(self.request.remote_ip):
                raise Forbidden(
                    "admin routes answer only loopback callers while PULLY_ADMIN_TOKEN is unset"
                )
            return
        header = self.request.headers.get("Authorization")
        if not header:
            raise Unauthorized(
                "admin token required: send Authorization: Bearer <PULLY_ADMIN_TOKEN>"
            )
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            raise Forbidden("admin token rejected")

    def json_body(self, limit: int) -> dict[str, Any]:
        """The request body as a JSON object; ``too_large`` past ``limit`` bytes."""
        body = self.request.body
        if len(body) > limit:
            raise TooLarge(f"body is {len(body)} bytes; the limit is {limit}")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise BadRequest("body must be a JSON object")
        return doc
