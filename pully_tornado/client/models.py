"""What the client hands to the application: messages, positions, history, presence, events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .subscription import Subscription


@dataclass(frozen=True, slots=True)
class Position:
    """A place in a channel's sequence: offsets rise by one per message within one epoch; a new
    epoch means the sequence restarted, so offsets of different epochs are never compared."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Message:
    """One published message as a subscriber receives it."""

    channel: str
    data: Any
    offset: int
    epoch: str

    @property
    def position(self) -> Position:
        return Position(self.offset, self.epoch)

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> Message:
        return cls(frame["channel"], frame.get("data"), int(frame["offset"]), str(frame["epoch"]))


@dataclass(frozen=True, slots=True)
class History:
    """A channel's retained messages, oldest first, and its latest position."""

    channel: str
    messages: list[Message]
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    """One subscriber of a presence channel: its connection id and its user (None: anonymous)."""

    client: str
    user: str | None


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection is up (``welcome`` received); ``reconnect`` is False the first time."""

    url: str
    client: str
    node: str
    user: str | None
    reconnect: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection ended. ``code`` is the WebSocket close code (1006 or None: it just
    dropped; 1012: the node drained), ``reconnecting`` False once the client stops for good."""

    url: str
    code: int | None
    reason: str
    reconnecting: bool


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """The client waits ``delay`` seconds, then tries ``url``; ``attempt`` counts from 0 since
    the last successful connection; ``error`` is why the previous attempt failed, if it did."""

    attempt: int
    delay: float
    url: str
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Something failed without a caller to raise it to: a refused resubscribe, a handshake
    refusal while reconnecting, a message handler that raised. ``channel`` when it concerns one."""

    error: BaseException
    channel: str | None = None


@dataclass(frozen=True, slots=True)
class RecoveryFailed:
    """A resubscribe could not recover what was missed (``recovered: false``: the epoch changed
    or history no longer covers the gap). It follows a reconnect, or the node's ``unsubscribed``
    with ``reason: insufficient_state`` (it could not vouch for the channel's continuity).
    Nothing was replayed; messages continue live from ``position``. Reload the channel's state
    from your source of truth."""

    channel: str
    subscription: Subscription
    previous: Position | None
    position: Position


@dataclass(frozen=True, slots=True)
class ServerSubscribed:
    """The node subscribed this client on its own (a server-side subscription: the token's or
    the connect proxy's ``subscribe`` list, or the app's ``/api/subscribe``). ``subscription``
    (``server`` True) is in :attr:`Pully.subscriptions`; iterate it for the messages. After a
    reconnect the node renews those of the token's list, recovering what was missed
    (``recovered``); the others end with the ``unsubscribed`` event (``not_renewed``)."""

    channel: str
    subscription: Subscription
    recovered: bool | None


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """The node ended the subscription on its own, for ``reason`` (``forbidden``: a refreshed
    token no longer allows the channel). The subscription has ended as if
    :meth:`~pully_tornado.client.Subscription.unsubscribe` had been called; subscribe again if
    the reason allows it. (An ``insufficient_state`` end is not reported here: the client
    resubscribes on its own, and ``recovery_failed`` follows if the gap could not be filled.)"""

    channel: str
    subscription: Subscription
    reason: str


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """``join`` or ``leave`` on a presence channel this client is subscribed to."""

    kind: Literal["join", "leave"]
    channel: str
    client: str
    user: str | None


@dataclass(frozen=True, slots=True)
class FrameEvent:
    """Every protocol frame, ``in`` (from the node) or ``out`` (to it): for logs and debugging."""

    direction: Literal["in", "out"]
    frame: dict[str, Any]
