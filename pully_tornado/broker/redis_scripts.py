"""What every Redis topology shares: key names, the Lua scripts and the pub/sub payload format.

Keys and channels, per Pully channel ``C`` (the ``{C}`` hash tag keeps them in one cluster slot,
so every script touches one slot and, in a Redis Cluster, one shard):

* ``pully:meta:{C}``: hash ``o`` (latest offset), ``e`` (epoch), ``r`` (replication id of the
  master that wrote the epoch); expires after ``meta_ttl`` idle.
* ``pully:hist:{C}``: stream of the last ``history_size`` messages (entry id ``<offset>-0``,
  field ``p`` = the message's data, as published); expires ``history_ttl`` after the last
  publish.
* ``pully:ch:{C}``: the pub/sub channel (``PUBLISH`` on one Redis, ``SPUBLISH`` on a Cluster).
  A publication travels as ``p<offset> <epoch>\\n<data>``; ``join``/``leave`` frames as
  ``\\n<frame>``.

Redis carries data and positions, never client frames: every node builds the ``message`` frame
with ``protocol.message`` (the one builder), once per publication. Wave-1 nodes stored and
published the frame itself (field ``d``, header ``<offset> <epoch>``); what they left in history
is still read as it is, and a wave-1 publication still delivered (with a warning: the two
versions must not share a Redis, docs/operations.md "Upgrading"). The ``p`` in front of the
offset makes a wave-1 node fail loudly on a new publication rather than pass its data on as a
frame.
* ``pully:pres:{C}`` (hash client -> info) and ``pully:presz:{C}`` (zset client -> expiry).
* ``pully:idem:{C}:<key>``: ``<offset> <epoch>`` of the publication made with idempotency key
  ``<key>``, for the idempotency TTL: a repeat of the key publishes nothing and gets that
  position back (decided in the publish script, so two nodes racing with one key cannot both
  publish).

Epochs and failover: every script that may hand out a position is given the replication id of
the master it runs on (read by the link when it connected). When the channel's meta was written
under another replication id, a replica has been promoted (or the slot moved) since, and the
newest increments of the offset may be lost: the script starts a new epoch before it goes on, so
no (epoch, offset) is ever handed out for two different messages. The stream is kept (what the
new master has is still readable by ``history``), but a recovery across the change answers
``recovered: false``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from typing import Any

from .. import protocol

logger = logging.getLogger("pully.broker.redis")

# The epoch check every position-handing script starts with. KEYS[1] meta, KEYS[2] stream;
# EPOCH = the epoch to create if none, REPLID = this master's replication id ('' unknown).
_EPOCH_CHECK = r"""
local meta = redis.call('HMGET', KEYS[1], 'e', 'r')
local epoch = meta[1]
if not epoch then
  epoch = EPOCH
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0, 'r', REPLID)
  redis.call('DEL', KEYS[2])
elseif REPLID ~= '' and meta[2] ~= REPLID then
  if meta[2] then  -- written under another master: its newest increments may be lost
    epoch = EPOCH
    redis.call('HSET', KEYS[1], 'e', epoch, 'r', REPLID)
  else  -- written before the id was recorded (an older Pully): adopt it
    redis.call('HSET', KEYS[1], 'r', REPLID)
  end
end
"""

# KEYS: meta, stream, and the idempotency key's key when the publish has one. ARGV: 1 the
# message's data (JSON), 2 epoch to create if none, 3 pub/sub channel, 4 meta TTL s ('0':
# none), 5 history size ('0': none, and any kept is dropped), 6 history TTL s, 7 replication
# id, 8 idempotency TTL s. 5, 6 and 8 are per call (channel options). A repeat of an
# idempotency key returns the first publication's position and touches nothing else.
_PUBLISH = (
    r"""
if #KEYS == 3 then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local space = string.find(seen, ' ', 1, true)
    return {tonumber(string.sub(seen, 1, space - 1)), string.sub(seen, space + 1)}
  end
end
"""
    + _EPOCH_CHECK.replace("EPOCH", "ARGV[2]").replace("REPLID", "ARGV[7]")
    + r"""
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
if ARGV[4] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
if ARGV[5] ~= '0' then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[5], offset .. '-0', 'p', ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
else
  redis.call('DEL', KEYS[2])
end
redis.call('PUBLISH', ARGV[3], 'p' .. offset .. ' ' .. epoch .. '\n' .. ARGV[1])
if #KEYS == 3 then redis.call('SET', KEYS[3], offset .. ' ' .. epoch, 'EX', ARGV[8]) end
return {offset, epoch}
"""
)

# KEYS: meta, stream. ARGV: 1 epoch to create if none, 2 meta TTL s ('0': none),
# 3 'since' offset ('-1': none), 4 limit ('-1': all retained), 5 replication id.
# Returns {offset, epoch, {id, {field, frame}}...} with entries oldest first.
HISTORY_LUA = (
    _EPOCH_CHECK.replace("EPOCH", "ARGV[1]").replace("REPLID", "ARGV[5]")
    + r"""
local offset = redis.call('HGET', KEYS[1], 'o')
if ARGV[2] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
local entries
if ARGV[3] ~= '-1' then
  entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[3] .. '-0', '+')
elseif ARGV[4] == '0' then
  entries = {}
elseif ARGV[4] == '-1' then
  entries = redis.call('XRANGE', KEYS[2], '-', '+')
else
  entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[4])
  local n = #entries
  for i = 1, math.floor(n / 2) do
    entries[i], entries[n - i + 1] = entries[n - i + 1], entries[i]
  end
end
return {tonumber(offset or '0'), epoch, entries}
"""
)

# KEYS: meta, stream. The next use of the channel creates a new epoch (history_remove).
HISTORY_REMOVE_LUA = r"""
redis.call('DEL', KEYS[1], KEYS[2])
return 0
"""

# KEYS: presence hash, presence zset. ARGV: 1 client, 2 info, 3 expires at (unix s),
# 4 key TTL s, 5 pub/sub channel, 6 join frame. Publishes the join only for a new member.
_JOIN = r"""
local new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if new == 1 then redis.call('PUBLISH', ARGV[5], '\n' .. ARGV[6]) end
return new
"""

# KEYS: presence hash, presence zset. ARGV: 1 client, 2 pub/sub channel, 3 leave frame.
_LEAVE = r"""
redis.call('ZREM', KEYS[2], ARGV[1])
local gone = redis.call('HDEL', KEYS[1], ARGV[1])
if gone == 1 then redis.call('PUBLISH', ARGV[2], '\n' .. ARGV[3]) end
return gone
"""

# KEYS: presence hash, presence zset. ARGV: 1 now (unix s). Drops expired members first.
PRESENCE_LUA = r"""
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
  redis.call('HDEL', KEYS[1], unpack(expired))
end
return redis.call('HVALS', KEYS[1])
"""


class Script:
    def __init__(self, body: str) -> None:
        self.body = body.encode()
        self.sha = hashlib.sha1(self.body).hexdigest().encode()


class Scripts:
    """The scripts of one topology: ``publish_command`` is ``PUBLISH`` (one Redis, Sentinel) or
    ``SPUBLISH`` (Cluster: the message travels only inside the shard owning the channel)."""

    def __init__(self, publish_command: str = "PUBLISH") -> None:
        def sharded(body: str) -> Script:
            return Script(body.replace("'PUBLISH'", f"'{publish_command}'"))

        self.publish = sharded(_PUBLISH)
        self.history = Script(HISTORY_LUA)
        self.history_remove = Script(HISTORY_REMOVE_LUA)
        self.join = sharded(_JOIN)
        self.leave = sharded(_LEAVE)
        self.presence = Script(PRESENCE_LUA)


def meta_key(channel: str) -> str:
    return f"pully:meta:{{{channel}}}"


def history_key(channel: str) -> str:
    return f"pully:hist:{{{channel}}}"


def seen_key(channel: str, key: str) -> str:
    return f"pully:idem:{{{channel}}}:{key}"


def presence_keys(channel: str) -> list[str]:
    return [f"pully:pres:{{{channel}}}", f"pully:presz:{{{channel}}}"]


def pubsub_channel(channel: str) -> bytes:
    return f"pully:ch:{{{channel}}}".encode()


def control_channel(topic: str) -> bytes:
    return f"pully:{topic}".encode()


CONTROL_TOPICS = ("relationships", "control")


def parse_history(channel: str, reply: Any) -> tuple[int, str, list[int], list[bytes]]:
    """The history script's reply: (offset, epoch, entry offsets, ``message`` frames)."""
    offset, epoch, entries = reply
    offsets, frames = [], []
    for entry_id, (field, value) in entries:
        entry_epoch, entry_offset = epoch.decode(), int(entry_id.split(b"-", 1)[0])
        offsets.append(entry_offset)
        if field == b"p":
            frames.append(protocol.message(channel, value, entry_offset, entry_epoch))
        else:  # b"d": the frame a wave-1 node stored
            frames.append(value)
    return int(offset), epoch.decode(), offsets, frames


def parse_publication(channel: str, message: bytes) -> tuple[int, str, bytes] | None:
    """A pub/sub message of ``channel``'s: (offset, epoch, ``message`` frame) for a
    publication, None for a ``join``/``leave`` frame (the text after the newline)."""
    head, _, body = message.partition(b"\n")
    if not head:
        return None
    if head[:1] == b"p":
        offset, _, epoch = head[1:].partition(b" ")
        position, name = int(offset), epoch.decode()
        return position, name, protocol.message(channel, body, position, name)
    offset, _, epoch = head.partition(b" ")  # a wave-1 node's: the frame itself
    _warn_wave1()
    return int(offset), epoch.decode(), body


@functools.cache  # once per process
def _warn_wave1() -> None:
    logger.warning(
        "a Pully node of an earlier version publishes on this Redis: mixed versions are not "
        "supported (docs/operations.md, Upgrading); its publications are delivered as sent"
    )
