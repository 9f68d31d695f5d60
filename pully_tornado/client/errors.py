"""Everything the client raises, under one base: :class:`PullyClientError`.

Two families sit under it:

- :class:`ServerError` and one subclass per wire error code of protocol v1 (``bad_request``,
  ``unknown_type``, ``invalid_channel``, ``too_large``, ``forbidden``, ``rate_limited``,
  ``function_failed``, ``unavailable``, ``internal``): the node answered a command with an
  ``error`` frame. The connection is still open and usable.
- Connection-level failures raised by the client itself: :class:`NotConnected` (fail-fast mode,
  or the client is closed), :class:`ConnectionLost` (the connection dropped before the reply;
  :class:`Pully` re-sends the command instead), :class:`RequestTimeout`, and
  :class:`HandshakeRefused` (the node refused the WebSocket upgrade with an HTTP status).

This module is the client's own: it imports nothing from the server (nor Tornado).
"""

from __future__ import annotations

from typing import Any, Final


class PullyClientError(Exception):
    """Base of every error the Pully client raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServerError(PullyClientError):
    """The node answered a command with ``{"type": "error", "code": ..., "message": ...}``.

    ``code`` is the wire error code; a code this client does not know (a newer server) is
    raised as a plain ``ServerError`` carrying it.
    """

    code = "internal"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class BadRequest(ServerError):
    """Not JSON, not an object, a field missing or mistyped; presence on a channel without it."""

    code = "bad_request"


class UnknownType(ServerError):
    """The command's ``type`` is not one protocol v1 knows."""

    code = "unknown_type"


class InvalidChannel(ServerError):
    """The channel name breaks the rules (1-200 chars of ``A-Z a-z 0-9 _ - : . @ / =``)."""

    code = "invalid_channel"


class TooLarge(ServerError):
    """The frame is larger than the node's ``PULLY_MAX_MESSAGE_BYTES``."""

    code = "too_large"


class Forbidden(ServerError):
    """The connection's token does not allow this channel."""

    code = "forbidden"


class RateLimited(ServerError):
    """Publish rate or subscription count limit reached; retry after a pause."""

    code = "rate_limited"


class FunctionFailed(ServerError):
    """A channel function failed and rejected the publish."""

    code = "function_failed"


class Unavailable(ServerError):
    """The node's broker is unreachable: nothing was done; retry later."""

    code = "unavailable"


class Internal(ServerError):
    """A bug on the server; the connection stays usable."""

    code = "internal"


SERVER_ERRORS: Final[dict[str, type[ServerError]]] = {
    cls.code: cls
    for cls in (
        BadRequest, UnknownType, InvalidChannel, TooLarge, Forbidden, RateLimited,
        FunctionFailed, Unavailable, Internal,
    )
}  # fmt: skip


def server_error(frame: dict[str, Any]) -> ServerError:
    """The exception for an ``error`` frame: the subclass of its code, else ``ServerError``."""
    code = str(frame.get("code", "internal"))
    message = str(frame.get("message", code))
    cls = SERVER_ERRORS.get(code)
    return cls(message) if cls is not None else ServerError(message, code)


class NotConnected(PullyClientError):
    """No connection right now and the client was told to fail fast (``offline="fail"``), or
    the client is closed or never connected."""


class ClientClosed(NotConnected):
    """The client was closed (by :meth:`Pully.close`, or after a fatal handshake refusal)."""


class ConnectionLost(PullyClientError):
    """The connection dropped after the command was sent and before its reply.

    :class:`Pully` sends the command again on its next connection (a publish with the same
    idempotency key, so it is published at most once): callers see a :class:`RequestTimeout`
    when no reply came in time, not this.
    """


class RequestTimeout(PullyClientError, TimeoutError):
    """No reply (or, in ``offline="wait"`` mode, no connection) within the timeout; also a
    ``TimeoutError``.

    For a publish that was sent, the outcome is unknown, as with :class:`ConnectionLost`.
    """


class HandshakeRefused(PullyClientError):
    """The node refused the WebSocket upgrade with an HTTP ``status``: 401 (token missing,
    invalid or expired), 403 (origin not allowed), 503 (draining or full: retried)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class AlreadySubscribed(PullyClientError):
    """:meth:`Pully.subscribe` on a channel this client is already subscribed to."""
