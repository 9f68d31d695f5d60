"""Pully's Python client: asyncio, over protocol v1, with reconnect, resubscribe and recovery.

Needs only ``websockets`` (not Tornado)::

    async with Pully("ws://localhost:8080/ws") as p:
        sub = await p.subscribe("chat")
        offset = await p.publish("chat", {"text": "hi"})
        async for message in sub:
            print(message.offset, message.data)

See ``docs/clients.md`` for the whole API and the reconnect and recovery semantics.
"""

from ..backoff import Backoff
from .client import Pully
from .errors import (
    AlreadySubscribed,
    BadRequest,
    ClientClosed,
    ConnectionLost,
    Forbidden,
    FunctionFailed,
    HandshakeRefused,
    Internal,
    InvalidChannel,
    NotConnected,
    PullyClientError,
    RateLimited,
    RequestTimeout,
    ServerError,
    TooLarge,
    Unavailable,
    UnknownType,
)
from .models import (
    Connected,
    Disconnected,
    ErrorEvent,
    FrameEvent,
    History,
    Message,
    Position,
    PresenceEntry,
    PresenceEvent,
    Reconnecting,
    RecoveryFailed,
    ServerSubscribed,
    Unsubscribed,
)
from .subscription import Subscription

__all__ = [
    "AlreadySubscribed",
    "Backoff",
    "BadRequest",
    "ClientClosed",
    "Connected",
    "ConnectionLost",
    "Disconnected",
    "ErrorEvent",
    "Forbidden",
    "FrameEvent",
    "FunctionFailed",
    "HandshakeRefused",
    "History",
    "Internal",
    "InvalidChannel",
    "Message",
    "NotConnected",
    "Position",
    "PresenceEntry",
    "PresenceEvent",
    "Pully",
    "PullyClientError",
    "RateLimited",
    "Reconnecting",
    "RecoveryFailed",
    "RequestTimeout",
    "ServerError",
    "ServerSubscribed",
    "Subscription",
    "TooLarge",
    "Unavailable",
    "UnknownType",
    "Unsubscribed",
]
