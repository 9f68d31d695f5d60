"""The broker interface: per-channel offsets, publishing and cross-node delivery.

A broker assigns every publication the next offset of its channel (unique and gap-free across
the cluster, within one *epoch*) and hands it, as the finished ``message`` frame payload, to the
``on_publication`` callback of every node that subscribed to the channel. Implementations:
``memory`` (one process, the default) and ``redis`` (a cluster of nodes on one Redis).
"""

from __future__ import annotations

import abc
import secrets
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ..protocol import Position

__all__ = ["Broker", "BrokerEvents", "History", "Position", "covered", "new_epoch"]


@dataclass(frozen=True, slots=True)
class History:
    """A channel's retained messages (``message`` frame payloads, oldest first) and position.

    ``covered`` answers a recovery request: True when ``messages`` holds every message after
    the ``since`` position asked for (same epoch, nothing trimmed), so nothing was lost."""

    position: Position
    messages: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    covered: bool = False


def covered(since: Position | None, position: Position, offsets: list[int]) -> bool:
    """Whether ``offsets`` (ascending, all after ``since``) hold everything after ``since``."""
    if since is None or since.epoch != position.epoch or since.offset > position.offset:
        return False
    if since.offset == position.offset:
        return True
    return bool(offsets) and offsets[0] == since.offset + 1 and offsets[-1] == position.offset


class BrokerEvents(Protocol):
    """What a broker calls back into (the :class:`~pully_tornado.node.Node`)."""

    def on_publication(self, channel: str, offset: int, epoch: str, payload: bytes) -> None:
        """A publication for ``channel``; ``payload`` is the complete ``message`` frame JSON."""

    def on_presence(self, channel: str, payload: bytes) -> None:
        """A ``join`` or ``leave`` frame for ``channel``'s subscribers (no offset)."""

    def on_control(self, topic: str, payload: bytes) -> None:
        """A node-to-node control message (e.g. ``relationships``), from any node."""

    def on_broker_state(self, connected: bool) -> None:
        """The broker lost or regained its backend; after a regain, state may have been missed."""


class Broker(abc.ABC):
    """Interface every broker implements. All methods raise only ``PullyError`` subclasses:
    :class:`~pully_tornado.errors.Unavailable` when the backend cannot be reached (nothing was
    published or subscribed then)."""

    kind: ClassVar[str]
    # idempotency keys forgotten before their TTL to bound memory (the memory engine's cap)
    idempotency_keys_forgotten = 0

    @abc.abstractmethod
    async def start(self, events: BrokerEvents) -> None:
        """Start delivering to ``events``. Does not fail when the backend is down: the broker
        keeps retrying in the background and reports through ``on_broker_state``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop background work and release connections. Idempotent."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """True while the backend is reachable (always for the memory broker)."""

    def describe(self) -> dict[str, Any]:
        """Broker state for ``/healthz``."""
        return {"kind": self.kind, "state": "connected" if self.connected else "disconnected"}

    @property
    @abc.abstractmethod
    def reconnects(self) -> int:
        """Times the backend link came back after a loss, since :meth:`start` (``/metrics``);
        0 for a broker with no link to lose (memory)."""

    @property
    @abc.abstractmethod
    def channel_count(self) -> int:
        """Channels this broker keeps state for in this process (``/metrics``): it must follow
        what is live here, not every channel name ever used."""

    @abc.abstractmethod
    async def publish(
        self,
        channel: str,
        data: bytes,
        *,
        history_size: int | None = None,
        history_ttl: float | None = None,
        idempotency_key: str | None = None,
        idempotency_ttl: float | None = None,
    ) -> Position:
        """Assign the next offset of ``channel``, append the message to its history and deliver
        ``data`` (JSON bytes) to every subscribed node, atomically. Returns its position.

        ``history_size`` and ``history_ttl`` are the channel's history window from its
        ``options`` (None: the broker's ``PULLY_HISTORY_SIZE`` / ``PULLY_HISTORY_TTL``). They
        apply from this publish on: history is trimmed to the last ``history_size`` messages
        (0 drops it) and kept ``history_ttl`` seconds after this publish.

        With ``idempotency_key``, a publish of the same (channel, key) within
        ``idempotency_ttl`` seconds (None: ``PULLY_IDEMPOTENCY_TTL``) of the first publishes
        nothing and returns the first one's position, decided atomically with the publish: of
        two nodes racing with one key, one publishes."""

    @abc.abstractmethod
    async def history_remove(self, channel: str) -> None:
        """Drop ``channel``'s history and position: its next publication starts a new epoch
        at offset 1 (subscribers following the old one are told ``insufficient_state`` by
        their node and resubscribe; a recovery across it answers ``recovered: false``)."""

    async def position(self, channel: str) -> Position:
        """The channel's latest position; creates the channel's epoch if it has none yet, so the
        epoch a subscriber is told is the one its first message will carry."""
        return (await self.history(channel, limit=0)).position

    @abc.abstractmethod
    async def history(
        self, channel: str, since: Position | None = None, limit: int | None = None
    ) -> History:
        """Retained messages and the position, read atomically. With ``since``: the messages
        after it, and whether they cover everything since (see :class:`History`). Otherwise the
        newest ``limit`` messages (all retained when ``limit`` is None), oldest first."""

    @abc.abstractmethod
    async def presence_join(self, channel: str, client: str, info: bytes) -> None:
        """Record ``client`` (``info``: JSON ``{"client","user"}``) as present on ``channel``
        and send a ``join`` frame to its subscribers on every node (unless already present)."""

    @abc.abstractmethod
    async def presence_leave(self, channel: str, client: str, info: bytes) -> None:
        """Remove ``client`` from ``channel``'s presence and send a ``leave`` frame (if present)."""

    @abc.abstractmethod
    async def presence(self, channel: str) -> list[bytes]:
        """The ``{"client","user"}`` JSON entries present on ``channel``, expired ones dropped."""

    async def presence_refresh(self, entries: list[tuple[str, str, bytes]]) -> None:  # noqa: B027
        """Keep this node's ``(channel, client, info)`` entries alive for another TTL (brokers
        whose entries cannot outlive their node need do nothing)."""

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Receive ``channel``'s publications on this node from now on. Returns once the
        backend confirmed it: every publication after that reaches ``on_publication``."""

    @abc.abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving ``channel`` on this node. Never raises for a backend outage."""

    @abc.abstractmethod
    async def publish_control(self, topic: str, payload: bytes) -> None:
        """Send a control message to every node (this one included)."""


def new_epoch() -> str:
    """A fresh epoch id: it only has to differ from every earlier epoch of the channel."""
    return secrets.token_hex(4)
