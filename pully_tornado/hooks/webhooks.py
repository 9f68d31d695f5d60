"""Webhooks (``PULLY_WEBHOOK_URL``): node events told to the app's backend in signed batches.

An event is queued in O(1) and never waits: the queue holds ``PULLY_WEBHOOK_QUEUE`` events and
past that new events are dropped and counted (``overflow``), so a receiver that is slow or down
never slows a client. One sender task takes up to :data:`BATCH_SIZE` events, or what came
within :data:`BATCH_WAIT` seconds of the first, and POSTs ``{"events": [...]}`` with
``X-Pully-Signature: sha256=<hex HMAC-SHA256 of the body, keyed with PULLY_WEBHOOK_SECRET>``.
Anything but a 2xx answer (or none within :data:`POST_TIMEOUT`) is retried with capped
backoff, up to :data:`MAX_ATTEMPTS` posts or :data:`MAX_AGE` seconds, after which the batch is
dropped and counted (``failed``). Batches go one at a time, in order: a receiver sees events in
the order this node queued them (events of different nodes are not ordered).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import logging
import time
from typing import Any

import orjson

from ..backoff import Backoff
from ..tasks import stop
from .post import Poster

logger = logging.getLogger("pully.hooks")

BATCH_SIZE = 100
BATCH_WAIT = 1.0
POST_TIMEOUT = 5.0
MAX_ATTEMPTS = 8
MAX_AGE = 60.0  # seconds since the first post of a batch
RETRY = Backoff(base=0.5, cap=10.0)
SIGNATURE_HEADER = "X-Pully-Signature"


def signature(secret: str, body: bytes) -> str:
    """The ``X-Pully-Signature`` value of ``body``: ``sha256=`` and the hex HMAC-SHA256."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Webhooks:
    def __init__(
        self, url: str, secret: str, events: frozenset[str], node: str, queue_size: int,
        retry: Backoff = RETRY,
    ) -> None:  # fmt: skip
        self.events = events
        self._poster = Poster(url, POST_TIMEOUT, max_clients=1)
        self._secret = secret
        self._node = node
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._max = queue_size
        self._retry = retry
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while nothing is queued or being sent
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        # events by outcome, for /metrics: queued, sent, overflow (queue full), failed (retries
        # exhausted)
        self.counts: collections.Counter[str] = collections.Counter()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pully-webhooks")

    async def close(self, grace: float) -> None:
        """Send what is queued for up to ``grace`` seconds (a drained node's disconnects), then
        stop; what is left is counted as ``failed``."""
        if self._task is not None:
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        await stop(self._task)
        self._task = None
        self.counts["failed"] += len(self._queue)
        self._queue.clear()
        self._poster.close()

    def emit(self, kind: str, **fields: Any) -> None:
        """Queue event ``kind`` (one of ``events``; others are ignored). Never blocks."""
        if kind not in self.events:
            return
        if len(self._queue) >= self._max:
            self.counts["overflow"] += 1
            return
        event = {"type": kind, "time": round(time.time(), 3), "node": self._node}
        event.update((k, v) for k, v in fields.items() if v is not None)
        self._queue.append(event)
        self._idle.clear()
        self.counts["queued"] += 1
        if len(self._queue) == 1 or len(self._queue) >= BATCH_SIZE:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                continue
            if len(self._queue) < BATCH_SIZE:  # let a batch fill, for BATCH_WAIT at most
                try:
                    async with asyncio.timeout(BATCH_WAIT):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()
            batch = [self._queue.popleft() for _ in range(min(BATCH_SIZE, len(self._queue)))]
            try:
                await self._deliver(batch)
            except asyncio.CancelledError:
                self._queue.extendleft(reversed(batch))  # close() counts them
                raise
            except Exception:
                logger.exception("webhook batch of %d events lost", len(batch))
                self.counts["failed"] += len(batch)
            if self._queue:
                self._wake.set()
            else:
                self._idle.set()

    async def _deliver(self, batch: list[dict[str, Any]]) -> None:
        body = orjson.dumps({"events": batch})
        headers = {SIGNATURE_HEADER: signature(self._secret, body)}
        started = time.monotonic()
        attempt = 0
        while True:
            answer = await self._poster.post(body, headers)
            if 200 <= answer.status < 300:
                self.counts["sent"] += len(batch)
                return
            attempt += 1
            why = answer.problem or f"HTTP {answer.status}"
            delay = self._retry.delay(attempt - 1)
            if attempt >= MAX_ATTEMPTS or time.monotonic() - started + delay > MAX_AGE:
                logger.warning(
                    "webhook %s: %s after %d attempts; %d events dropped", self._poster.url, why,
                    attempt, len(batch),
                )  # fmt: skip
                self.counts["failed"] += len(batch)
                return
            logger.info("webhook %s: %s; retrying in %.1fs", self._poster.url, why, delay)
            await asyncio.sleep(delay)
