"""The document a node runs: loaded from the store, reloaded when told, swapped whole."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..broker.base import Backoff
from ..errors import PullyError, Unavailable
from .schema import EMPTY, Relationships
from .store import Store, Stored

logger = logging.getLogger("pully.relationships")

POLL_INTERVAL = 30.0  # seconds between checks of the store's version, besides control messages


class RelationshipsManager:
    """Holds the current document and its version.

    ``current`` is replaced as a whole, never edited, so a publish that captured it runs one
    version's pipeline from start to end. A failed load keeps the last good document and is
    retried with capped jittered backoff; until a first load succeeds, :meth:`require` raises
    ``unavailable`` (fail closed: no message skips its functions)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.current: Relationships = EMPTY
        self.version: int | None = None  # None until the first load succeeds
        self.error: str | None = None
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> dict[str, Any]:
        return {"version": self.version, "store": self.store.describe(), "error": self.error}

    def require(self) -> Relationships:
        if self.version is None:
            raise Unavailable(f"relationships not loaded yet ({self.error or 'loading'})")
        return self.current

    async def start(self) -> None:
        try:
            await self.load()
        except PullyError as exc:
            logger.error(
                "relationships not loaded (%s); publishes fail until they are", exc.message
            )
        self._task = asyncio.create_task(self._forever(), name="pully-relationships")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def reload_soon(self) -> None:
        """Reload from the store at the next opportunity (a peer saved, the broker came back)."""
        self._wanted.set()

    def apply(self, stored: Stored | None) -> None:
        """Swap in ``stored`` if it is newer than what runs now."""
        version = 0 if stored is None else stored.version
        if self.version is not None and version <= self.version:
            return
        self.current = EMPTY if stored is None else stored.relationships
        self.version = version
        logger.info("relationships version %d applied (%d channel rules)", version,
                    len(self.current.channels))  # fmt: skip

    async def load(self) -> None:
        try:
            self.apply(await self.store.load())
        except PullyError as exc:
            self.error = exc.message
            raise
        self.error = None

    async def save(
        self, relationships: Relationships, announce: Callable[[int], Awaitable[None]]
    ) -> int:
        """Store a new version, apply it, then ``announce`` it (to the other nodes). Raises
        ``Unavailable`` when the store cannot be reached: nothing changed then."""
        version = await self.store.save(relationships)
        self.apply(Stored(relationships, version))
        try:
            await announce(version)
        except PullyError as exc:  # saved all the same: the other nodes find it when they poll
            logger.warning("relationships version %d saved but not announced: %s", version,
                           exc.message)  # fmt: skip
        return version

    async def _forever(self) -> None:
        backoff = Backoff(base=0.2, cap=10.0)
        while True:
            try:
                if self.version is None or self.error is not None:
                    await self.load()
                    backoff.reset()
                self._wanted.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_INTERVAL):
                        await self._wanted.wait()
                if self._wanted.is_set() or await self.store.version() > (self.version or 0):
                    await self.load()
            except PullyError as exc:
                self.error = exc.message
                delay = backoff.next()
                logger.warning(
                    "relationships reload failed (%s); keeping version %s, retrying in %.1fs",
                    exc.message, self.version, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
