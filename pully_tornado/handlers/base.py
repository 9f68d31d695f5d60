"""What every HTTP handler shares: the JSON error envelope and the admin guard."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import Any

import orjson
import tornado.web

from ..errors import (
    BadRequest,
    Forbidden,
    Internal,
    PullyError,
    TooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from ..node import Node
from . import guards

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
        """Admin routes, every method: no browser page of another origin (``Forbidden``, 403,
        see :mod:`.guards`); then ``Authorization: Bearer $PULLY_ADMIN_TOKEN`` (401 without,
        403 when wrong), or with no token configured a loopback caller that names the node by
        a trusted host (403); then, for anything but GET and HEAD, a JSON body
        (``UnsupportedMediaType``, 415): no page can send one cross-origin without a CORS
        preflight, which the node never answers."""
        settings, headers = self.node.settings, self.request.headers
        refusal = guards.admin_refusal(headers, settings)
        if refusal is not None:
            raise Forbidden(refusal)
        self._check_admin_token(settings.admin_token)
        if self.request.method not in ("GET", "HEAD"):
            sent = headers.get("Content-Type")
            if not guards.json_content_type(sent):
                raise UnsupportedMediaType(
                    "admin writes need Content-Type: application/json; this request sent "
                    + (f"Content-Type: {sent}" if sent is not None else "no Content-Type")
                )

    def _check_admin_token(self, token: str | None) -> None:
        if not token:
            if not is_loopback(self.request.remote_ip):
                raise Forbidden(
                    "admin routes answer only loopback callers while PULLY_ADMIN_TOKEN is unset"
                )
            host = self.request.headers.get("Host", "")
            if not guards.trusted_host(host, self.node.settings.allowed_hosts):
                raise Forbidden(
                    f"Host {host!r} is not trusted while PULLY_ADMIN_TOKEN is unset (a page can "
                    "point any DNS name at this node: DNS rebinding): call 127.0.0.1 or "
                    "localhost, or list the name in PULLY_ALLOWED_HOSTS"
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
