"""Typed registration of event listeners: ``client.on("connected", listener)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, overload

from .emitter import Emitter
from .models import (
    Connected,
    Disconnected,
    ErrorEvent,
    FrameEvent,
    PresenceEvent,
    Reconnecting,
    RecoveryFailed,
    ServerSubscribed,
    Unsubscribed,
)

Unlisten = Callable[[], None]
EVENTS = frozenset(
    {
        "connected", "disconnected", "reconnecting", "error", "recovery_failed", "unsubscribed",
        "presence", "frame", "server_subscribed",
    }
)  # fmt: skip


class EventSource:
    """The events half of :class:`~pully_tornado.client.Pully`; each name has its payload type."""

    _emitter: Emitter

    @overload
    def on(
        self, event: Literal["connected"], listener: Callable[[Connected], object]
    ) -> Unlisten: ...
    @overload
    def on(
        self, event: Literal["disconnected"], listener: Callable[[Disconnected], object]
    ) -> Unlisten: ...
    @overload
    def on(
        self, event: Literal["reconnecting"], listener: Callable[[Reconnecting], object]
    ) -> Unlisten: ...
    @overload
    def on(self, event: Literal["error"], listener: Callable[[ErrorEvent], object]) -> Unlisten: ...
    @overload
    def on(
        self, event: Literal["recovery_failed"], listener: Callable[[RecoveryFailed], object]
    ) -> Unlisten: ...
    @overload
    def on(
        self, event: Literal["unsubscribed"], listener: Callable[[Unsubscribed], object]
    ) -> Unlisten: ...
    @overload
    def on(
        self, event: Literal["presence"], listener: Callable[[PresenceEvent], object]
    ) -> Unlisten: ...
    @overload
    def on(self, event: Literal["frame"], listener: Callable[[FrameEvent], object]) -> Unlisten: ...
    @overload
    def on(
        self, event: Literal["server_subscribed"], listener: Callable[[ServerSubscribed], object]
    ) -> Unlisten: ...

    def on(self, event: str, listener: Callable[[Any], object]) -> Unlisten:
        """Call ``listener`` (sync, or async: run as a task) with each event of that name.

        Events: ``connected``, ``disconnected``, ``reconnecting``, ``error``,
        ``recovery_failed``, ``unsubscribed`` (the node ended a subscription), ``presence``
        (join/leave), ``frame`` (every frame, for logs), ``server_subscribed`` (the node
        subscribed this client on its own).
        Returns a function that removes the listener. Raises ``ValueError`` for another name."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; one of {', '.join(sorted(EVENTS))}")
        return self._emitter.add(event, listener)
