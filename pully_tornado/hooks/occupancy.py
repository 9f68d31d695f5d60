"""``channel_occupied`` / ``channel_vacated``, cluster-wide: the first subscriber anywhere, the
last one gone anywhere. Only runs when webhooks ask for one of the two events.

Each node states which channels it has local subscribers on; the cluster's answer is the union.
With Redis (:class:`RedisLedger`), per channel ``C`` a set ``pully:occ:{C}`` of node ids, per
node a set ``pully:occn:{NODE}`` of its channels, and a zset ``pully:occ:nodes`` of node id ->
heartbeat expiry. Each change of a channel's set is one Lua script that answers whether *this*
call changed its emptiness, so exactly one node, the one whose add made it non-empty (or whose
remove emptied it), emits the event. Every ``ttl / 3`` a node renews its heartbeat (expiry
``PULLY_PRESENCE_TTL`` ahead) and sweeps nodes whose heartbeat expired: their channels are
popped from their set one at a time (``SPOP``: one sweeper per channel even when several sweep
at once) and removed with the same script, so a crashed node's channels vacate after the TTL,
once. A node frozen past its TTL and swept finds out at its next heartbeat and states its
channels again. The memory engine (one process) keeps it in a set (:class:`MemoryLedger`).

This node's part runs in one task that reconciles what it wants (channels with local
subscribers) with what it told the ledger, so adds and removes of a channel never overtake each
other; a channel that gains and loses its subscribers here before the task ran (milliseconds)
is not told at all. Under a Redis outage the task retries; a script that ran but whose answer
was lost may lose one event (at most once, never twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..backoff import Backoff
from ..errors import PullyError
from ..tasks import stop

logger = logging.getLogger("pully.hooks")

# KEYS[1] pully:occ:{C}. ARGV[1] node. 1: this add made the channel occupied.
ADD_LUA = b"""
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then
  return 1
end
return 0
"""
# KEYS[1] pully:occ:{C}. ARGV[1] node. 1: this remove made the channel vacant.
REMOVE_LUA = b"""
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 0 then
  return 1
end
return 0
"""
# KEYS[1] a node's channel set. ARGV: SADD/SREM/SPOP, then its arguments.
SET_LUA = b"""
return redis.call(ARGV[1], KEYS[1], unpack(ARGV, 2))
"""
# KEYS[1] pully:occ:nodes. ARGV: 1 node, 2 expiry, 3 now. Returns {revived, dead nodes}:
# revived is 1 when the node had no live heartbeat (first beat, or it was taken for dead).
HEARTBEAT_LUA = b"""
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local revived = 0
if (not old) or tonumber(old) <= tonumber(ARGV[3]) then revived = 1 end
return {revived, redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, 20)}
"""
# KEYS[1] pully:occ:nodes. ARGV: 1 node, 2 now. Forgets a swept node unless it came back.
FORGET_LUA = b"""
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""
NODES_KEY = "pully:occ:nodes"


def channel_key(channel: str) -> str:
    return f"pully:occ:{{{channel}}}"


def node_key(node: str) -> str:
    return f"pully:occn:{{{node}}}"


@runtime_checkable
class ScriptRunner(Protocol):
    async def run_script(self, body: bytes, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script whose keys share one slot; raises ``Unavailable``."""


class Ledger(Protocol):
    async def add(self, channel: str) -> bool: ...
    async def remove(self, channel: str) -> bool: ...
    async def heartbeat(self) -> tuple[bool, list[str]]: ...
    async def sweep(self, node: str) -> list[str]: ...


class MemoryLedger:
    """One process: the channels with local subscribers are all there is."""

    def __init__(self) -> None:
        self._occupied: set[str] = set()

    async def add(self, channel: str) -> bool:
        new = channel not in self._occupied
        self._occupied.add(channel)
        return new

    async def remove(self, channel: str) -> bool:
        gone = channel in self._occupied
        self._occupied.discard(channel)
        return gone

    async def heartbeat(self) -> tuple[bool, list[str]]:
        return False, []

    async def sweep(self, node: str) -> list[str]:
        return []


class RedisLedger:
    def __init__(self, redis: ScriptRunner, node: str, ttl: float) -> None:
        self._redis = redis
        self._node = node
        self._ttl = ttl

    async def add(self, channel: str) -> bool:
        await self._redis.run_script(SET_LUA, [node_key(self._node)], ["SADD", channel])
        return bool(await self._redis.run_script(ADD_LUA, [channel_key(channel)], [self._node]))

    async def remove(self, channel: str) -> bool:
        gone = await self._redis.run_script(REMOVE_LUA, [channel_key(channel)], [self._node])
        await self._redis.run_script(SET_LUA, [node_key(self._node)], ["SREM", channel])
        return bool(gone)

    async def heartbeat(self) -> tuple[bool, list[str]]:
        now = time.time()
        revived, dead = await self._redis.run_script(
            HEARTBEAT_LUA, [NODES_KEY], [self._node, now + self._ttl, now]
        )
        return bool(revived), [d.decode() for d in dead if d.decode() != self._node]

    async def sweep(self, node: str) -> list[str]:
        """Remove ``node``'s channels; returns those this call vacated."""
        vacated = []
        while True:
            popped = await self._redis.run_script(SET_LUA, [node_key(node)], ["SPOP", "50"])
            for raw in popped or []:
                channel = raw.decode()
                if await self._redis.run_script(REMOVE_LUA, [channel_key(channel)], [node]):
                    vacated.append(channel)
            if not popped:
                break
        await self._redis.run_script(FORGET_LUA, [NODES_KEY], [node, time.time()])
        return vacated


class Occupancy:
    """This node's share; ``emit(kind, channel)`` is called once per cluster-wide change."""

    def __init__(
        self, ledger: Ledger, node: str, ttl: float, emit: Callable[[str, str], None]
    ) -> None:
        self._ledger = ledger
        self._node = node
        self._interval = ttl / 3
        self._emit = emit
        self._wanted: set[str] = set()  # channels with local subscribers
        self._told: set[str] = set()  # channels the ledger has for this node
        self._dirty: dict[str, None] = {}  # to tell the ledger, in the order they changed
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()  # set while nothing is left to tell the ledger
        self._cleared = asyncio.Event()  # an earlier run's state under this node id is gone
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start beating and reconciling (the first beat clears what an earlier run under this
        node id left, before anything is told: a restart within the TTL)."""
        self._tasks = [
            asyncio.create_task(self._reconcile_forever(), name="pully-occupancy"),
            asyncio.create_task(self._beat_forever(), name="pully-occupancy-heartbeat"),
        ]

    async def close(self, grace: float) -> None:
        """Tell the ledger this node's channels are gone (for up to ``grace`` seconds)."""
        self._wanted.clear()
        self._dirty.update(dict.fromkeys(self._told))
        self._settled.clear()
        self._wake.set()
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._settled.wait()
        for task in self._tasks:
            await stop(task)
        self._tasks = []

    def set(self, channel: str, occupied: bool) -> None:
        """``channel`` has (True) or no longer has (False) subscribers on this node."""
        if occupied:
            self._wanted.add(channel)
        else:
            self._wanted.discard(channel)
        self._dirty[channel] = None
        self._settled.clear()
        self._wake.set()

    async def _reconcile_forever(self) -> None:
        backoff, attempt = Backoff(base=0.1, cap=5.0), 0
        await self._cleared.wait()
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while self._dirty:
                    channel = next(iter(self._dirty))
                    del self._dirty[channel]  # a change while it is told marks it again
                    try:
                        await self._reconcile(channel)
                    except PullyError:
                        self._dirty = {channel: None, **self._dirty}
                        raise
                attempt = 0
                self._settled.set()
            except PullyError as exc:
                logger.warning("occupancy: %s; retrying", exc.message)
                await asyncio.sleep(backoff.delay(attempt))
                attempt += 1
                self._wake.set()

    async def _reconcile(self, channel: str) -> None:
        wanted = channel in self._wanted
        if wanted == (channel in self._told):
            return
        if wanted:
            changed = await self._ledger.add(channel)
            self._told.add(channel)
        else:
            changed = await self._ledger.remove(channel)
            self._told.discard(channel)
        if changed:
            self._emit("channel_occupied" if wanted else "channel_vacated", channel)

    async def _beat_forever(self) -> None:
        while not self._cleared.is_set():
            try:
                for channel in await self._ledger.sweep(self._node):
                    self._emit("channel_vacated", channel)
                self._cleared.set()
            except PullyError as exc:
                logger.warning("occupancy: cannot clear this node's earlier state: %s", exc.message)
                await asyncio.sleep(self._interval)
        while True:
            try:
                revived, dead = await self._ledger.heartbeat()
                if revived and self._told:  # taken for dead and swept: state them again
                    logger.warning("occupancy: this node was taken for dead; restating")
                    self._dirty.update(dict.fromkeys(self._told))
                    self._told.clear()
                    self._wake.set()
                for node in dead:
                    for channel in await self._ledger.sweep(node):
                        self._emit("channel_vacated", channel)
            except PullyError as exc:
                logger.warning("occupancy heartbeat failed: %s", exc.message)
            await asyncio.sleep(self._interval)
