"""One exception tree for the whole node.

Domain code raises :class:`PullyError` subclasses; only the edges (WebSocket and HTTP handlers,
the CLI) translate them: ``code`` is the wire error code of protocol v1, ``status`` the HTTP
status of the same failure.
"""

from __future__ import annotations


class PullyError(Exception):
    """Base of every error Pully reports to a client."""

    code = "internal"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(PullyError):
    """The frame or body is not JSON, not an object, or a field is missing or mistyped."""

    code = "bad_request"
    status = 400


class UnknownType(PullyError):
    code = "unknown_type"
    status = 400


class InvalidChannel(PullyError):
    code = "invalid_channel"
    status = 400


class TooLarge(PullyError):
    code = "too_large"
    status = 413


class UnsupportedMediaType(PullyError):
    """An admin write whose body is not declared ``application/json``: an HTTP 415 only, never
    a wire error code (frames have no content type)."""

    code = "unsupported_media_type"
    status = 415


class Unauthorized(PullyError):
    """No valid credentials were presented where they are required: an HTTP 401 (admin routes,
    the WebSocket handshake). Never a wire error code: on an open connection a refused token
    (``refresh``) is :class:`Forbidden`."""

    code = "unauthorized"
    status = 401


class Forbidden(PullyError):
    code = "forbidden"
    status = 403


class RateLimited(PullyError):
    code = "rate_limited"
    status = 429


class FunctionFailed(PullyError):
    code = "function_failed"
    status = 502


class Unavailable(PullyError):
    """The broker or the store cannot be reached; nothing was done."""

    code = "unavailable"
    status = 503


class Internal(PullyError):
    code = "internal"
    status = 500


class ConfigError(Exception):
    """A setting has a bad value; ``source`` names the variable (and flag) it came from."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"invalid {source}: {problem}")
        self.source = source
        self.problem = problem


# Errors that only ever answer an HTTP request: never a wire error code (docs/protocol.md).
HTTP_ONLY: tuple[type[PullyError], ...] = (Unauthorized, UnsupportedMediaType)
