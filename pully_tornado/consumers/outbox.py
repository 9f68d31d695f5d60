"""The PostgreSQL outbox consumer (``PULLY_OUTBOX_DSN``; docs/consumers.md).

One connection per node. For each partition in turn, one transaction takes the partition's
advisory lock (``pg_try_advisory_xact_lock``: a partition held by another node is skipped), claims
up to ``PULLY_OUTBOX_BATCH_SIZE`` rows in ``id`` order ``FOR UPDATE SKIP LOCKED``, publishes them
one by one through the node's publisher, moves the ones that can never publish to
``<table>_failed`` and deletes the published ones, then commits. A transient failure
(``unavailable``) stops the partition's batch there: that row and the ones behind it stay for the
next round, so one channel's rows keep their order. ``LISTEN`` on the trigger's channel wakes the
loop; a poll every ``PULLY_OUTBOX_POLL_INTERVAL`` seconds is the fallback (and notices a lost
connection).

A crash between publishing and committing publishes those rows again on the next claim:
at-least-once into Pully (``idempotency_key`` makes it once on the wire).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from .base import Consumer
from .outbox_schema import notify_channel

if TYPE_CHECKING:
    from ..publishing import Publisher
    from ..settings import Settings

QUERY_TIMEOUT = 10.0


class OutboxConsumer(Consumer):
    kind = "outbox"

    def __init__(self, settings: Settings, publisher: Publisher) -> None:
        super().__init__(publisher, settings.max_message_bytes)
        assert settings.outbox_dsn is not None
        self._dsn = settings.outbox_dsn
        self._table = settings.outbox_table
        self._partitions = settings.outbox_partitions
        self._batch = settings.outbox_batch_size
        self._poll = settings.outbox_poll_interval
        self._wake = asyncio.Event()
        t = self._table
        self._claim = (
            f"SELECT id, channel, data::text AS data, idempotency_key, partition, created_at, "
            f"extract(epoch FROM clock_timestamp() - created_at)::float8 AS waited "
            f"FROM {t} WHERE partition = $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"
        )
        self._delete = f"DELETE FROM {t} WHERE id = ANY($1::bigint[])"
        self._fail = (
            f"INSERT INTO {t}_failed (id, channel, data, idempotency_key, partition, created_at, "
            f"error) VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING"
        )

    async def session(self) -> None:
        import asyncpg  # type: ignore[import-untyped]  # optional: the [postgres] extra

        conn = await asyncpg.connect(self._dsn, timeout=QUERY_TIMEOUT)
        try:
            await conn.add_listener(notify_channel(self._table), self._notified)
            self.connected()
            while not self.stopping.is_set():
                self._wake.clear()
                more = False
                for partition in range(self._partitions):
                    more = await self._round(conn, partition) or more
                if not more and not self.stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)

    def _notified(self, *_: Any) -> None:
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def _round(self, conn: Any, partition: int) -> bool:
        """Claim and publish one batch of ``partition``; True when it may hold more now."""
        async with conn.transaction():
            locked = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext($1), $2)",
                self._table,
                partition,
                timeout=QUERY_TIMEOUT,
            )
            if not locked:
                return False
            rows = await conn.fetch(self._claim, partition, self._batch, timeout=QUERY_TIMEOUT)
            done: list[int] = []
            stopped = False
            for row in rows:
                outcome = await self.publish(
                    row["channel"], row["data"].encode(), row["idempotency_key"]
                )
                if outcome.retry:
                    stopped = True
                    break
                if outcome.error is not None:
                    await conn.execute(
                        self._fail, row["id"], row["channel"], row["data"],
                        row["idempotency_key"], row["partition"], row["created_at"],
                        outcome.error, timeout=QUERY_TIMEOUT,
                    )  # fmt: skip
                done.append(row["id"])
                self.lag = max(0.0, float(row["waited"] or 0.0))
            if done:
                await conn.execute(self._delete, done, timeout=QUERY_TIMEOUT)
        if not rows:
            self.lag = 0.0
        return not stopped and len(rows) == self._batch
