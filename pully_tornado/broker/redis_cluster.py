"""Redis Cluster broker (``redis+cluster://H1:P1,H2:P2``, ``rediss+cluster://``).

Every key of channel ``C`` carries the ``{C}`` hash tag, so each script touches one slot; the
slot's master runs it. Publications travel by **sharded pub/sub**: the publish script
``SPUBLISH``es inside the shard that owns the channel, and a node ``SSUBSCRIBE``s each channel it
has local subscribers for on that shard only. Per shard master: one pipelined command link and
one subscriber link (Centrifugo's lesson: one subscriber connection per Redis node, not per
channel). Control messages (relationships, server API) use classic ``PUBLISH``/``SUBSCRIBE``,
which a Redis Cluster carries to every node: one shard's subscriber link hears them.

The topology comes from ``CLUSTER SHARDS`` (``CLUSTER SLOTS`` on servers without it), asked of
any known node: at start, every ``REFRESH_INTERVAL`` seconds, at once after a redirect
(``MOVED``/``ASK``: the command did not run and is sent again once the map is re-read), when a
shard's subscriber link drops (a failover: its replica is promoted), and when Redis ends a
sharded subscription (``sunsubscribe``: its slot moved). Whenever a channel's shard may have
changed, the node is told the broker was away (``on_broker_state``) and fills the gaps from
history exactly as after any outage; the replication id check of the publish script
(:mod:`.redis_scripts`) starts a new epoch on a promoted replica, so no position is handed out
twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from redis.crc import key_slot

from ..errors import Unavailable
from ..settings import Settings
from ..tasks import Background, stop
from .base import BrokerEvents
from .redis_common import RedisBase
from .redis_scripts import control_channel
from .redis_subscriber import Subscriber
from .redis_url import Endpoint, RedisTarget
from .resp import CommandLink, Link, LinkDown, RedisReplyError, open_link

logger = logging.getLogger("pully.broker.redis")

SLOTS = 16384
REFRESH_INTERVAL = 10.0  # seconds between topology reads when nothing prompts one
RETRY_REFRESH = 0.5  # seconds between reads while a shard has no reachable master


@dataclass(eq=False)
class Shard:
    address: tuple[str, int]
    commands: CommandLink
    subscriber: Subscriber


class RedisClusterBroker(RedisBase):
    kind = "redis"
    publish_command = "SPUBLISH"
    subscribe_command = b"SSUBSCRIBE"
    unsubscribe_command = b"SUNSUBSCRIBE"

    def __init__(self, settings: Settings, target: RedisTarget) -> None:
        super().__init__(settings, target)
        self._shards: dict[tuple[str, int], Shard] = {}
        self._slots: list[Shard | None] = [None] * SLOTS
        self._control_shard: Shard | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._changed = False  # a channel's shard may have changed since the last report
        self._dropping = Background(logger)  # shards being closed
        self._last_problem: str | None = None  # logged once while it lasts

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, events: BrokerEvents) -> None:
        self._events = events
        self._refresher = asyncio.create_task(self._refresh_forever(), name="pully-redis-slots")

    async def close(self) -> None:
        self._closing = True
        await stop(self._refresher)
        self._fail_waiters(Unavailable("broker closed"))
        for shard in list(self._shards.values()):
            await self._drop_shard(shard)
        await self._dropping.close(2.0)

    @property
    def connected(self) -> bool:
        shards = set(self._slots)
        return (
            bool(self._shards)
            and None not in shards
            and all(s is not None and s.subscriber.link is not None for s in shards)
        )

    def describe(self) -> dict[str, Any]:
        found = super().describe()
        found["topology"] = "cluster"
        if self._last_problem is not None:
            found.setdefault("problem", f"no node answers for the slot map: {self._last_problem}")
        found["shards"] = sorted(
            f"{host}:{port}" + ("" if shard.subscriber.link is not None else " (down)")
            for (host, port), shard in self._shards.items()
        )
        return found

    # -- topology ----------------------------------------------------------------------------

    def _commands_for(self, key: str) -> CommandLink:
        shard = self._slots[key_slot(key.encode())]
        if shard is None:
            raise LinkDown("no master serves this channel's slot right now")
        return shard.commands

    def _subscriber_for(self, key: bytes) -> Subscriber | None:
        shard = self._slots[key_slot(key)]
        if shard is None or shard.subscriber.link is None:
            return None
        return shard.subscriber

    async def _redirected(self, error: str) -> bool:
        if not error.startswith(("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")):
            return False
        if error.startswith(("ASK", "TRYAGAIN")):  # a slot is moving: let it finish
            await asyncio.sleep(0.05)
        await self._refresh()
        return True

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self._refresh()
                complete = None not in self._slots
            except Exception:  # never let the map's task die: retry
                logger.exception("redis cluster: reading the slot map failed")
                complete = False
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), REFRESH_INTERVAL if complete else RETRY_REFRESH
                )

    def _refresh_soon(self) -> None:
        self._wake.set()

    async def _refresh(self) -> None:
        """Read the slot map of any node that answers and apply it."""
        ranges = None
        errors: list[str] = []
        candidates = [self._target.endpoint.at(h, p) for h, p in self._shards] + list(
            self._target.seed_endpoints()
        )
        for endpoint in candidates:
            try:
                ranges = await _read_slots(endpoint)
                break
            except (OSError, TimeoutError, LinkDown, RedisReplyError) as exc:
                errors.append(f"{endpoint}: {exc or type(exc).__name__}")
        if ranges is None:
            problem = "; ".join(errors)
            log = logger.debug if problem == self._last_problem else logger.warning
            log("redis cluster: no node answers for the slot map: %s", problem)
            self._last_problem = problem
            self._down()
            return
        self._last_problem = None
        self._apply(ranges)

    def _apply(self, ranges: list[tuple[int, int, tuple[str, int]]]) -> None:
        slots: list[Shard | None] = [None] * SLOTS
        wanted = {address for _, _, address in ranges}
        for address in wanted - set(self._shards):
            self._shards[address] = self._new_shard(address)
        for start, end, address in ranges:
            shard = self._shards[address]
            for slot in range(start, end + 1):
                slots[slot] = shard
        moved = [s for s in range(SLOTS) if slots[s] is not self._slots[s]]
        first = not any(self._slots)
        self._slots = slots
        for address in set(self._shards) - wanted:  # no longer a master
            self._dropping.spawn(self._drop_shard(self._shards.pop(address)))
        if moved:
            if not first:
                logger.warning("redis cluster: %d slots changed shards", len(moved))
            self._move_channels(set(moved))
        control = self._slots[key_slot(control_channel("control"))]
        if control is not self._control_shard:
            self._control_shard = control
            if control is not None and control.subscriber.link is not None:
                self._send_batched(control.subscriber.link, b"SUBSCRIBE", list(self._control))
        self._settle()

    def _move_channels(self, slots: set[int]) -> None:
        """Subscribe the wanted channels of ``slots`` on their new shards (the old ones lost
        them, or are gone): publications between the move and now may be missed, so the node is
        told to check (``_settle``)."""
        self._changed = True
        for key in self._channels:
            if key_slot(key) in slots:
                shard = self._slots[key_slot(key)]
                if shard is not None:
                    shard.subscriber.send(self.subscribe_command, key)

    def _settle(self) -> None:
        """Report the broker's state: down while a slot has no reachable master; after a change
        of shards, down then up, so the node fills gaps from history as after an outage."""
        if not self.connected:
            self._down()
            return
        if self._changed and self._reported:
            self._report(False)
        self._changed = False
        self._report(True)

    def _down(self) -> None:
        """Report the broker down, once it has been up (not while it first connects)."""
        if self._reported is not None:
            self._report(False)

    def _new_shard(self, address: tuple[str, int]) -> Shard:
        endpoint = self._target.endpoint.at(*address)

        async def opener() -> Link:
            return await open_link(endpoint)

        name = f"{address[0]}:{address[1]}"
        subscriber = Subscriber(name, opener, self._resubscribe, self._on_link, self._on_reply)
        shard = Shard(address, CommandLink(opener), subscriber)
        if not self._closing:
            subscriber.start()
        return shard

    async def _drop_shard(self, shard: Shard) -> None:
        await shard.subscriber.close()
        await shard.commands.close()

    def _shard_of(self, subscriber: Subscriber) -> Shard | None:
        return next((s for s in self._shards.values() if s.subscriber is subscriber), None)

    def _resubscribe(self, subscriber: Subscriber, link: Link) -> None:
        shard = self._shard_of(subscriber)
        if shard is None:
            return
        if shard is self._control_shard:
            self._send_batched(link, b"SUBSCRIBE", list(self._control))
        for key in self._channels:
            # one SSUBSCRIBE per channel: a sharded subscribe takes channels of one slot only
            if self._slots[key_slot(key)] is shard:
                link.send(self.subscribe_command, key)

    def _on_link(self, subscriber: Subscriber, up: bool) -> None:
        shard = self._shard_of(subscriber)
        if up:
            self._changed = True  # it may have missed publications while it was down
            self._settle()
            return
        if shard is not None:
            shard.commands.reset()
            keys = {k for k in self._waiters if self._slots[key_slot(k)] is shard}
            self._fail_waiters(Unavailable("redis connection lost"), keys)
        self._down()
        self._refresh_soon()  # a failover promotes a replica: find it

    def _on_sunsubscribe(self, subscriber: Subscriber, key: bytes) -> None:
        if key in self._channels:  # Redis ended it: the slot moved
            self._refresh_soon()

    def _on_error_reply(self, subscriber: Subscriber, error: str) -> None:
        if error.startswith(("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")):
            self._refresh_soon()  # an SSUBSCRIBE sent to a shard that no longer owns the slot
            return
        super()._on_error_reply(subscriber, error)

    async def publish_control(self, topic: str, payload: bytes) -> None:
        shard = self._control_shard
        if shard is None:
            raise Unavailable("redis cluster has no reachable master, control message not sent")
        try:
            await shard.commands.call(b"PUBLISH", control_channel(topic), payload)
        except (LinkDown, RedisReplyError) as exc:
            raise Unavailable(f"redis is unreachable, control message not sent ({exc})") from None


async def _read_slots(endpoint: Endpoint) -> list[tuple[int, int, tuple[str, int]]]:
    """(first slot, last slot, master address) of every range the cluster serves."""
    link = await open_link(endpoint)
    try:
        try:
            return _shards_ranges(await link.request("CLUSTER", "SHARDS"), endpoint.tls)
        except RedisReplyError as exc:
            if "unknown" not in str(exc).lower():
                raise
        return _slots_ranges(await link.request("CLUSTER", "SLOTS"))
    finally:
        link.close()


def _shards_ranges(reply: Any, tls: bool) -> list[tuple[int, int, tuple[str, int]]]:
    ranges = []
    for shard in reply:
        fields = _pairs(shard)
        masters = [
            _pairs(node) for node in fields[b"nodes"]
            if _pairs(node).get(b"role") == b"master" and _pairs(node).get(b"health") != b"fail"
        ]  # fmt: skip
        if not masters:
            continue
        node = masters[0]
        port = (node.get(b"tls-port") if tls else node.get(b"port")) or node.get(b"port")
        if port is None:
            continue
        host = (node.get(b"ip") or node.get(b"endpoint") or b"127.0.0.1").decode()
        slots = fields[b"slots"]
        for i in range(0, len(slots), 2):
            ranges.append((int(slots[i]), int(slots[i + 1]), (host, int(port))))
    return ranges


def _slots_ranges(reply: Any) -> list[tuple[int, int, tuple[str, int]]]:
    return [
        (int(start), int(end), (master[0].decode(), int(master[1])))
        for start, end, master, *_ in reply
    ]


def _pairs(flat: Any) -> dict[bytes, Any]:
    """A RESP2 flat key/value list (as CLUSTER SHARDS answers) as a dict."""
    if isinstance(flat, dict):
        return flat
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}
