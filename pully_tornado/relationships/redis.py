"""Relationships in the cluster's Redis (the default store in cluster mode).

One hash, ``pully:relationships:doc``: ``version``, ``doc`` (the document as JSON), ``digest``
and ``saved_at``. A save is one Lua script, so the version increment and the document change
together and two nodes saving at once each get their own version. Every node of a cluster
already shares this Redis, so the store needs nothing else to configure; give Redis
persistence (AOF or RDB) if the document must survive a Redis restart (until it is saved again,
nodes keep running the document they have, and ``/healthz`` reports the split: see
:mod:`.manager`).

It talks to Redis over a :class:`~pully_tornado.broker.resp.CommandLink` (pipelined, reconnected
on demand, never retrying a command on its own): the broker's, which knows where the key lives
(the master Sentinel names, the shard of a Redis Cluster), when the store is the cluster's Redis
(``PULLY_STORE=redis``); its own for a ``redis://`` URL."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from ..broker.redis_url import parse_redis_url
from ..broker.resp import CommandLink, LinkDown, RedisReplyError
from ..errors import Unavailable
from .schema import InvalidRelationships, Relationships, digest, dumps, loads
from .store import Store, Stored

KEY = "pully:relationships:doc"

# KEYS: the hash. ARGV: 1 document JSON, 2 digest, 3 lowest version to exceed, 4 saved_at.
SAVE_LUA = b"""
local version = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local floor = tonumber(ARGV[3])
if floor > version then version = floor end
version = version + 1
redis.call('HSET', KEYS[1], 'version', version, 'doc', ARGV[1], 'digest', ARGV[2],
           'saved_at', ARGV[4])
return version
"""
SAVE_SHA = hashlib.sha1(SAVE_LUA).hexdigest().encode()


class RedisStore(Store):
    def __init__(self, url: str, commands_for: Callable[[str], CommandLink] | None = None) -> None:
        self._url = url
        self._own = None if commands_for is not None else CommandLink(url)
        self._commands_for = commands_for

    @property
    def _commands(self) -> CommandLink:
        if self._commands_for is not None:
            return self._commands_for(KEY)
        assert self._own is not None
        return self._own

    def describe(self) -> dict[str, Any]:
        target = parse_redis_url(self._url)
        where = target.endpoint.path or ",".join(f"{h}:{p}" for h, p in target.seeds)
        db = target.endpoint.db
        return {"kind": "redis", "server": where + (f"/{db}" if db else ""), "key": KEY}

    async def _call(self, *args: bytes | str | int) -> Any:
        try:
            return await self._commands.call(*args)
        except (LinkDown, RedisReplyError) as exc:
            raise Unavailable(f"redis store {KEY} is unreachable: {exc}") from None

    async def load(self) -> Stored | None:
        version, doc = await self._call(b"HMGET", KEY, b"version", b"doc")
        if doc is None:
            return None
        try:
            return Stored(loads(doc), int(version or 0))
        except (InvalidRelationships, ValueError) as exc:
            problems = "; ".join(getattr(exc, "problems", [str(exc)])[:5])
            raise Unavailable(f"redis key {KEY} is not a valid document: {problems}") from None

    async def version(self) -> int:
        return int(await self._call(b"HGET", KEY, b"version") or 0)

    async def save(self, relationships: Relationships, above: int = 0) -> int:
        args = [dumps(relationships), digest(relationships), above, repr(time.time())]
        try:
            version = await self._commands.script(SAVE_SHA, SAVE_LUA, [KEY], args)
        except (LinkDown, RedisReplyError) as exc:
            raise Unavailable(f"cannot save to redis key {KEY}: {exc}") from None
        return int(version)

    async def close(self) -> None:
        if self._own is not None:  # the broker closes its own links
            await self._own.close()
