"""Publishing on this node: rights, the channel's options, the functions, the broker.

One publication, from a client's ``publish`` frame or the admin API, passes here on its way to
the broker: the publisher's rights and the channel's ``publish`` option are checked, the
channel's functions run (they may transform or drop it), and the broker assigns its position.
Results are counted by outcome for ``/metrics``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

from .auth import Identity
from .broker import Broker, Position
from .errors import Forbidden, PullyError, TooLarge
from .functions.pipeline import Pipeline
from .hub import Conn
from .relationships.manager import RelationshipsManager


@dataclass(frozen=True, slots=True)
class Published:
    position: Position | None  # None when a function dropped the message

    @property
    def dropped(self) -> bool:
        return self.position is None


class Publisher:
    def __init__(
        self,
        broker: Broker,
        relationships: RelationshipsManager,
        pipeline: Pipeline,
        identity: Callable[[Conn | None], Identity],
        max_message_bytes: int,
    ) -> None:
        self._broker = broker
        self._relationships = relationships
        self._pipeline = pipeline
        self._identity = identity
        self._max_message_bytes = max_message_bytes
        self.results: collections.Counter[str] = collections.Counter()  # by outcome or code

    async def publish(
        self,
        channel: str,
        data: bytes,
        conn: Conn | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Published:
        """Publish JSON ``data`` to ``channel``: returns the assigned position once the broker
        has it. ``conn`` (None for the server API and consumers) must be allowed to publish
        there. A repeat of ``idempotency_key`` on ``channel`` within the channel's idempotency
        TTL publishes nothing and returns the first publication's position (the functions run
        again; their result is not published). Raises ``PullyError`` subclasses
        (``unavailable`` when the broker is down)."""
        try:
            published = await self._publish(channel, data, conn, idempotency_key)
        except PullyError as exc:
            self.results[exc.code] += 1
            raise
        self.results["dropped" if published.dropped else "ok"] += 1
        return published

    async def _publish(
        self, channel: str, data: bytes, conn: Conn | None, key: str | None
    ) -> Published:
        if conn is not None and not self._identity(conn).may_publish(channel):
            raise Forbidden(f"not allowed to publish to {channel!r}")
        relationships = self._relationships.require()  # one document for the whole pipeline
        options = relationships.options_for(channel)
        if conn is not None and options.publish == "server":
            raise Forbidden(f"only the server publishes to {channel!r} (its options say so)")
        result = await self._pipeline.run(
            relationships, channel, data, None if conn is None else conn.client_id
        )
        if result is None:
            return Published(None)
        if result is not data and len(result) > self._max_message_bytes:
            raise TooLarge(
                f"the functions made the message {len(result)} bytes; the limit is "
                f"{self._max_message_bytes} (PULLY_MAX_MESSAGE_BYTES)"
            )
        position = await self._broker.publish(
            channel, result, history_size=options.history_size, history_ttl=options.history_ttl,
            idempotency_key=key, idempotency_ttl=options.idempotency_ttl,
        )  # fmt: skip
        return Published(position)
