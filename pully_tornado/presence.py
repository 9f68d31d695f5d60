"""Who is subscribed where, for channels with presence: this node's share of it.

The broker holds the cluster's presence (Redis: a hash per channel, refreshed by each node for
its own clients, so a crashed node's clients expire after ``PULLY_PRESENCE_TTL``). This module
owns what this node contributes: an entry per (channel, client) of its own, joined when a
subscription becomes live, left when it ends, and refreshed every third of the TTL.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from . import protocol
from .broker import Broker
from .errors import PullyError
from .relationships.manager import RelationshipsManager
from .tasks import stop

logger = logging.getLogger("pully.presence")

Spawn = Callable[[Coroutine[Any, Any, Any]], None]


class Presence:
    """This node's presence entries. ``spawn`` runs the broker calls in the background (a
    join or leave never holds up a subscribe or a disconnect)."""

    def __init__(
        self,
        broker: Broker,
        relationships: RelationshipsManager,
        globs: tuple[str, ...],
        ttl: float,
        spawn: Spawn,
    ) -> None:
        self._broker = broker
        self._relationships = relationships
        self._globs = globs
        self._ttl = ttl
        self._spawn = spawn
        self._entries: dict[tuple[str, str], bytes] = {}  # (channel, client) -> info
        self._refresher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def close(self) -> None:
        await stop(self._refresher)
        self._refresher = None

    def enabled(self, channel: str) -> bool:
        """The channel's ``presence`` option when set, else ``PULLY_PRESENCE_CHANNELS``."""
        presence = self._relationships.current.options_for(channel).presence
        if presence is not None:
            return presence
        return any(fnmatch.fnmatchcase(channel, g) for g in self._globs)

    def describe_rule(self) -> str:
        """Which channels have presence, for an error message."""
        return f"PULLY_PRESENCE_CHANNELS: {', '.join(self._globs) or 'none'}"

    def join(self, channel: str, client: str, user: str | None) -> None:
        info = protocol.presence_info(client, user)
        self._entries[(channel, client)] = info
        self._spawn(self._broker.presence_join(channel, client, info))

    def leave(self, channel: str, client: str) -> None:
        info = self._entries.pop((channel, client), None)
        if info is not None:
            self._spawn(self._broker.presence_leave(channel, client, info))

    async def _refresh_forever(self) -> None:
        interval = self._ttl / 3
        while True:
            await asyncio.sleep(interval)
            if not self._entries:
                continue
            try:
                entries = [(ch, client, info) for (ch, client), info in self._entries.items()]
                await self._broker.presence_refresh(entries)
            except PullyError as exc:
                logger.warning("presence refresh failed: %s", exc.message)
