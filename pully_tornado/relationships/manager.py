"""The document a node runs: loaded from the store, reloaded when told, swapped whole; and
whether the other nodes run the same one.

Nodes tell each other what they run on the control channel ``pully:relationships``:
``{"version", "node", "digest"}``, after every save and every ``POLL_INTERVAL`` seconds. A node
whose peers run the same version with another digest, or a version its own store does not
have even after a reload, reads from a different store than they do (separate ``file://``
stores, a Redis that lost the document): it reports ``"split": true`` at ``/healthz`` (status
503) and logs it, instead of serving a different document under the same version."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..backoff import Backoff
from ..errors import PullyError, Unavailable
from ..tasks import stop
from .schema import EMPTY, Relationships, digest
from .store import Store, Stored

logger = logging.getLogger("pully.relationships")

POLL_INTERVAL = 30.0  # seconds between checks of the store's version and reports to the peers
PEER_SILENCE = 3  # intervals after which a peer that said nothing is forgotten (it left)

Announce = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Peer:
    version: int
    digest: str | None  # None: a node too old to send one
    heard: float  # time.monotonic()


class RelationshipsManager:
    """Holds the current document, its version and digest, and what the peers run.

    ``current`` is replaced as a whole, never edited, so a publish that captured it runs one
    version's pipeline from start to end. A failed load keeps the last good document and is
    retried with capped jittered backoff; until a first load succeeds, :meth:`require` raises
    ``unavailable`` (fail closed: no message skips its functions). ``announce`` sends a control
    payload to every node (None: a node on its own)."""

    def __init__(self, store: Store, node_id: str = "", announce: Announce | None = None) -> None:
        self.store = store
        self.node_id = node_id
        self.current: Relationships = EMPTY
        self.version: int | None = None  # None until the first load succeeds
        self.digest = digest(EMPTY)
        self.error: str | None = None
        self._announce = announce
        self._peers: dict[str, _Peer] = {}
        self._loaded_at = float("-inf")  # when the last successful load started (monotonic)
        self._split: str | None = None  # as last logged
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> dict[str, Any]:
        split = self.split()
        state = {"version": self.version, "digest": self.digest, "store": self.store.describe(),
                 "error": self.error, "split": split is not None}  # fmt: skip
        if split is not None:
            state["split_reason"] = split
        return state

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
        else:
            await self._tell_peers()
        self._task = asyncio.create_task(self._forever(), name="pully-relationships")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None
        await self.store.close()

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
        self.digest = digest(self.current)
        logger.info("relationships version %d applied (%d channel rules, %d option rules, "
                    "digest %s)", version, len(self.current.channels), len(self.current.options),
                    self.digest)  # fmt: skip

    async def load(self) -> None:
        self._wanted.clear()  # a reload asked for from now on needs another load
        started = time.monotonic()
        try:
            self.apply(await self.store.load())
        except PullyError as exc:
            self.error = exc.message
            raise
        self.error = None
        self._loaded_at = started
        self._check_split()

    async def save(self, relationships: Relationships) -> int:
        """Store a new version, apply it, then announce it to the other nodes. Raises
        ``Unavailable`` when the store cannot be reached: nothing changed then."""
        version = await self.store.save(relationships, above=self.version or 0)
        self.apply(Stored(relationships, version))
        await self._tell_peers(saved=True)  # on failure, the other nodes find it when they poll
        return version

    # -- the peers -----------------------------------------------------------------------------

    def on_peer(self, node: str, version: int, peer_digest: str | None) -> None:
        """Node ``node`` runs ``version`` (whose digest is ``peer_digest``): reload if it is
        newer than ours, and check that we agree."""
        if node == self.node_id:
            return
        now = time.monotonic()
        self._peers[node] = _Peer(version, peer_digest, now)
        horizon = now - PEER_SILENCE * POLL_INTERVAL
        for name in [n for n, p in self._peers.items() if p.heard < horizon]:
            del self._peers[name]
        if version > (self.version or 0):
            logger.info("node %s runs relationships version %d; reloading", node, version)
            self.reload_soon()
        self._check_split()

    def split(self) -> str | None:
        """Why this node and a peer run different documents, or None while they agree."""
        if self.version is None:
            return None
        horizon = time.monotonic() - PEER_SILENCE * POLL_INTERVAL
        for node, peer in sorted(self._peers.items()):
            if peer.heard < horizon:
                continue
            if peer.version == self.version and peer.digest not in (None, self.digest):
                return (
                    f"node {node} runs version {peer.version} with another document (digest "
                    f"{peer.digest}; this node {self.digest}): the nodes do not share one store"
                )
            if peer.version > self.version and peer.heard < self._loaded_at:
                return (
                    f"node {node} runs version {peer.version}, which this node's store does not "
                    f"have (it holds {self.version}): the nodes do not share one store"
                )
        return None

    def _check_split(self) -> None:
        split = self.split()
        if split != self._split:
            if split is not None:
                logger.error("relationships split: %s; /healthz answers 503 until it is fixed "
                             "(one PULLY_STORE for every node: redis or s3://)", split)  # fmt: skip
            else:
                logger.info("relationships: this node agrees with its peers again")
            self._split = split

    async def _tell_peers(self, saved: bool = False) -> None:
        """Publish what this node runs; a failure is logged (as a warning after a save; the
        periodic report is retried anyway) and otherwise ignored."""
        if self._announce is None or self.version is None:
            return
        payload = {"version": self.version, "node": self.node_id, "digest": self.digest}
        try:
            await self._announce(orjson.dumps(payload))
        except PullyError as exc:
            log = logger.warning if saved else logger.debug
            log("relationships version %d not announced to the other nodes: %s", self.version,
                exc.message)  # fmt: skip

    async def _forever(self) -> None:
        backoff = Backoff(base=0.2, cap=10.0)
        attempt = 0  # failed reloads since the last good one
        while True:
            try:
                if self.version is None or self.error is not None or self._wanted.is_set():
                    await self.load()
                    attempt = 0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_INTERVAL):
                        await self._wanted.wait()
                if not self._wanted.is_set():  # a quiet interval: tell the peers, poll the store
                    await self._tell_peers()
                    self._check_split()  # a peer may have gone silent
                    if await self.store.version() > (self.version or 0):
                        self._wanted.set()
            except PullyError as exc:
                self.error = exc.message
                delay = backoff.delay(attempt)
                attempt += 1
                logger.warning(
                    "relationships reload failed (%s); keeping version %s, retrying in %.1fs",
                    exc.message, self.version, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
