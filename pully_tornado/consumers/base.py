"""What every consumer shares: its state for ``/healthz``, its counters for ``/metrics``, the
reconnect loop (capped full-jitter backoff, :mod:`pully_tornado.backoff`) and stopping
(:func:`pully_tornado.tasks.stop`).

A consumer implements :meth:`Consumer.session`: connect, call :meth:`Consumer.connected`, and
consume until the connection fails (raise) or the task is cancelled. Publishing goes through
:meth:`Consumer.publish`, the same :class:`~pully_tornado.publishing.Publisher` path as any
publish, which sorts the outcome into ``ok`` / ``retry`` (``unavailable``: try again later) /
a permanent error message (never succeeds: dead-letter it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import protocol, tasks
from ..backoff import Backoff
from ..errors import PullyError, TooLarge, Unavailable

if TYPE_CHECKING:
    from ..publishing import Publisher

logger = logging.getLogger("pully.consumers")

RESULTS = ("consumed", "failed", "dead_lettered")


@dataclass(frozen=True, slots=True)
class Outcome:
    """``ok``; ``retry`` (transient: leave it for a later try); or ``error`` (never succeeds)."""

    retry: bool = False
    error: str | None = None


class Consumer:
    kind = "consumer"

    def __init__(
        self, publisher: Publisher, max_message_bytes: int, backoff: Backoff | None = None
    ) -> None:
        self._publisher = publisher
        self._max_message_bytes = max_message_bytes
        self._backoff = backoff or Backoff(0.5, 15.0)
        self._task: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()  # session() returns at its next safe point once set
        self.state = "starting"  # connected | reconnecting | stopped
        self.last_error: str | None = None
        self.counts: collections.Counter[str] = collections.Counter()
        self.reconnects = 0
        self.lag = 0.0  # seconds the newest publication waited in the source

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self, grace: float = 5.0) -> None:
        """Let the batch in hand finish (up to ``grace`` seconds: no row published and left
        behind needlessly), then cancel."""
        self.stopping.set()
        self.wake()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=grace)
        await tasks.stop(self._task)
        self._task = None
        self.state = "stopped"

    async def _run(self) -> None:
        attempt = 0
        while not self.stopping.is_set():
            began = time.monotonic()
            try:
                await self.session()
                if self.stopping.is_set():
                    return
                error = "the connection ended"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of the source: reconnect, never crash
                error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            if self.state == "connected":
                self.reconnects += 1
            if time.monotonic() - began > self._backoff.cap:
                attempt = 0  # it ran a good while: start the backoff over
            self.state, self.last_error = "reconnecting", error
            delay = self._backoff.delay(attempt)
            logger.warning("%s consumer: %s; reconnecting in %.1fs", self.kind, error, delay)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    async def session(self) -> None:
        raise NotImplementedError

    def wake(self) -> None:
        """Stop waiting for work (``stopping`` was set); the default waits on nothing."""

    def connected(self) -> None:
        if self.state != "connected":
            logger.info("%s consumer connected", self.kind)
        self.state = "connected"

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, channel: object, data: bytes, key: str | None) -> Outcome:
        """Publish one message; count and classify the result (see the module's doc)."""
        try:
            channel = protocol.check_channel(channel)
            if len(data) > self._max_message_bytes:
                raise TooLarge(
                    f"data is {len(data)} bytes; the limit is {self._max_message_bytes} "
                    "(PULLY_MAX_MESSAGE_BYTES)"
                )
            key = protocol.check_idempotency_key(key)
            await self._publisher.publish(channel, data, idempotency_key=key)
        except Unavailable as exc:
            self.counts["failed"] += 1
            self.last_error = f"unavailable: {exc.message}"
            return Outcome(retry=True)
        except PullyError as exc:
            return self.dead_letter(f"{exc.code}: {exc.message}", channel)
        self.counts["consumed"] += 1
        return Outcome()

    def dead_letter(self, error: str, what: object) -> Outcome:
        self.counts["dead_lettered"] += 1
        logger.warning("%s consumer: dead-lettered a message for %r: %s", self.kind, what, error)
        return Outcome(error=error)

    def describe(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "last_error": self.last_error,
            "reconnects": self.reconnects,
            **{result: self.counts[result] for result in RESULTS},
        }


class ConsumersCollector(Collector):
    """``pully_consumer_*`` metrics of a node's consumers, read at scrape time."""

    def __init__(self, consumers: list[Consumer]) -> None:
        self._consumers = consumers

    def collect(self) -> Iterator[Metric]:
        if not self._consumers:
            return
        messages = CounterMetricFamily(
            "pully_consumer_messages", "Messages consumed from the outbox or AMQP, by result: "
            "consumed, failed (transient: left for a later try), dead_lettered",
            labels=["consumer", "result"],
        )  # fmt: skip
        connected = GaugeMetricFamily(
            "pully_consumer_connected", "1 while the consumer is connected to its source",
            labels=["consumer"],
        )  # fmt: skip
        lag = GaugeMetricFamily(
            "pully_consumer_lag_seconds", "How long the last publication waited in its source",
            labels=["consumer"],
        )  # fmt: skip
        reconnects = CounterMetricFamily(
            "pully_consumer_reconnects", "Times a consumer lost its source", labels=["consumer"]
        )
        for consumer in self._consumers:
            for result in RESULTS:
                messages.add_metric([consumer.kind, result], consumer.counts[result])
            connected.add_metric([consumer.kind], int(consumer.state == "connected"))
            lag.add_metric([consumer.kind], consumer.lag)
            reconnects.add_metric([consumer.kind], consumer.reconnects)
        yield from (messages, connected, lag, reconnects)
