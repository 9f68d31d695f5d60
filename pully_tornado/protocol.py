"""Wire protocol v1: decode client frames, encode server frames.

One JSON object per WebSocket text frame (see ``docs/protocol.md``). Decoding checks every rule
of the protocol and raises :class:`FrameRejected` carrying the wire error and the request ``id``
(when one could be read), so the reply can echo it. Encoding uses orjson; a ``message`` frame is
built once per node and the same bytes go to every local subscriber.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any, Final

import orjson

from .errors import BadRequest, InvalidChannel, PullyError, TooLarge, UnknownType

PROTOCOL_VERSION: Final = 1

RequestId = str | int

CHANNEL_PATTERN: Final = r"[A-Za-z0-9_\-:.@/=]{1,200}"
_CHANNEL_RE: Final = re.compile(CHANNEL_PATTERN + r"\Z")
MAX_ID_LENGTH: Final = 200

# Close codes (RFC 6455 section 7.4 plus Pully's application range 4000-4999).
CLOSE_DRAINING: Final = 1012  # service restart: reconnect (to another node)
CLOSE_PROTOCOL_ERROR: Final = 1002  # the client broke RFC 6455 (unmasked frame, bad opcode, ...)
CLOSE_INVALID_DATA: Final = 1007  # a text frame or close reason that is not UTF-8
CLOSE_TOO_BIG: Final = 1009  # frame past PULLY_MAX_FRAME_BYTES
CLOSE_TOKEN_EXPIRED: Final = 4001  # the JWT's exp passed without a refresh
CLOSE_SLOW_CONSUMER: Final = 4008  # outgoing buffer full: the client stopped reading
CLOSE_RATE_LIMITED: Final = 4029  # kept publishing past the rate limit

COMMANDS: Final = frozenset(
    {"subscribe", "unsubscribe", "publish", "ping", "presence", "history", "refresh"}
)
MAX_TOKEN_LENGTH: Final = 8192


class FrameRejected(Exception):
    """A client frame broke the protocol; ``error`` is what to answer, ``id`` the id to echo."""

    def __init__(self, error: PullyError, request_id: RequestId | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.id = request_id


@dataclass(frozen=True, slots=True)
class Position:
    """Where a channel's offset sequence stands: an offset and the epoch it counts in.

    One type for both directions: what a broker reports (the latest offset of a channel) and
    what a client sends as ``since`` to recover (the last offset it saw, in the epoch it saw it
    in). Defined here, beside the frames that carry it; ``broker.base`` re-exports it."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class Command:
    """A decoded, valid client frame."""

    type: str
    id: RequestId | None = None
    channel: str = ""
    data: bytes = b""  # publish: the JSON-encoded payload, ready for the broker
    since: Position | None = None
    limit: int | None = None
    token: str = ""  # refresh
    idempotency_key: str | None = None  # publish


def is_valid_channel(name: object) -> bool:
    return isinstance(name, str) and _CHANNEL_RE.match(name) is not None


def check_channel(name: object, field: str = "channel") -> str:
    """Return ``name`` if it is a valid channel name, else raise the wire error for it."""
    if not isinstance(name, str):
        raise BadRequest(f"field '{field}' is required and must be a string")
    if _CHANNEL_RE.match(name) is None:
        raise InvalidChannel(
            f"channel name {name[:60]!r} is invalid: use 1-200 chars of A-Z a-z 0-9 _ - : . @ / ="
        )
    return name


MAX_IDEMPOTENCY_KEY: Final = 64


def check_idempotency_key(key: object) -> str | None:
    """``key`` when it is absent (None) or a string of 1 to 64 characters, else the wire error."""
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise BadRequest(
            f"field 'idempotency_key' must be a string of 1 to {MAX_IDEMPOTENCY_KEY} characters"
        )
    return key


# orjson reads integers in [-2**63, 2**64 - 1] exactly and any larger one as a float, which would
# change the data. Only a run of 19 or more digits can be out of that range, so the exact check
# (stdlib json, slow) runs only for bodies that contain one.
_LONG_DIGITS: Final = re.compile(rb"\d{19,}")
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


def check_exact_numbers(raw: str | bytes, field: str | None = "data") -> None:
    """Raise :class:`BadRequest` naming the place if the JSON text ``raw`` holds, under its
    ``field`` member, an integer orjson cannot carry exactly (beyond 64 bits): Pully delivers
    data exactly as sent or refuses it, never rounded. ``field`` None: anywhere in it."""
    text = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if _LONG_DIGITS.search(text) is None:
        return
    try:
        doc = json.loads(text)
    except ValueError:
        return  # orjson accepted it; stdlib json disagreeing is not this check's business
    if field is None or (isinstance(doc, dict) and field in doc):
        where = _inexact_int(doc, "body") if field is None else _inexact_int(doc[field], field)
        if where is not None:
            raise BadRequest(
                f"field '{where}' is an integer beyond 64 bits, which JSON clients cannot carry "
                "exactly; send it as a string"
            )


def _inexact_int(value: Any, path: str) -> str | None:
    """The path of the first integer in ``value`` outside orjson's exact range, if any."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, int) and not isinstance(item, bool):
            if not _INT_MIN <= item <= _INT_MAX:
                return where
        elif isinstance(item, dict):
            stack.extend((v, f"{where}.{k}") for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(item))))
    return None


def encode_data(data: Any) -> bytes:
    """JSON-encode a publish payload once; raise :class:`BadRequest` if orjson cannot."""
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        raise BadRequest(f"field 'data' cannot be encoded: {exc}") from None


def _request_id(frame: dict[str, Any]) -> RequestId | None:
    rid = frame.get("id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise FrameRejected(BadRequest("field 'id' must be a string or an integer"))
    if isinstance(rid, str) and len(rid) > MAX_ID_LENGTH:
        raise FrameRejected(BadRequest(f"field 'id' must be at most {MAX_ID_LENGTH} chars"))
    return rid


def _nonneg_int(frame: dict[str, Any], field: str, where: str = "") -> int:
    value = frame.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"field '{where}{field}' must be a non-negative integer")
    return value


def _since(raw: object) -> Position:
    if not isinstance(raw, dict):
        raise BadRequest('field \'since\' must be an object {"offset": N, "epoch": E}')
    offset = _nonneg_int(raw, "offset", "since.")
    epoch = raw.get("epoch")
    if not isinstance(epoch, str):
        raise BadRequest("field 'since.epoch' must be a string")
    return Position(offset, epoch)


def _too_large(size: int, limit: int) -> TooLarge:
    return TooLarge(f"frame is {size} bytes; the limit is {limit} (PULLY_MAX_MESSAGE_BYTES)")


def decode(raw: str | bytes, max_bytes: int) -> Command:
    """Decode and validate one client frame.

    Raises :class:`FrameRejected` for any frame protocol v1 does not allow: ``too_large`` past
    ``max_bytes``, ``bad_request`` for bad JSON or fields, ``unknown_type``, ``invalid_channel``.
    """
    size = len(raw)
    if isinstance(raw, str) and size * 4 > max_bytes:
        size = len(raw.encode("utf-8", "surrogatepass"))
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if size > max_bytes:
            raise FrameRejected(_too_large(size, max_bytes)) from None
        raise FrameRejected(BadRequest(f"frame is not valid JSON: {exc}")) from None
    if not isinstance(frame, dict):
        raise FrameRejected(BadRequest("frame must be a JSON object"))
    rid = _request_id(frame)
    if size > max_bytes:
        raise FrameRejected(_too_large(size, max_bytes), rid)
    kind = frame.get("type")
    try:
        if not isinstance(kind, str):
            raise BadRequest("field 'type' is required and must be a string")
        if kind not in COMMANDS:
            raise UnknownType(f"unknown frame type {kind[:40]!r}")
        if kind == "ping":
            return Command(kind, rid)
        if kind == "refresh":
            token = frame.get("token")
            if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
                raise BadRequest("field 'token' is required and must be a non-empty string")
            return Command(kind, rid, token=token)
        channel = check_channel(frame.get("channel"))
        if kind == "publish":
            if "data" not in frame:
                raise BadRequest("field 'data' is required in publish (null is allowed)")
            check_exact_numbers(raw)
            key = check_idempotency_key(frame.get("idempotency_key"))
            return Command(kind, rid, channel, data=encode_data(frame["data"]), idempotency_key=key)
        if kind == "subscribe" and frame.get("since") is not None:
            return Command(kind, rid, channel, since=_since(frame["since"]))
        if kind == "history" and frame.get("limit") is not None:
            return Command(kind, rid, channel, limit=_nonneg_int(frame, "limit"))
        return Command(kind, rid, channel)
    except PullyError as exc:
        raise FrameRejected(exc, rid) from None


# -- server frames -------------------------------------------------------------------------------


def reply(kind: str, request_id: RequestId | None, **fields: Any) -> bytes:
    """Encode a reply frame; ``id`` is echoed when the request carried one."""
    frame: dict[str, Any] = {"type": kind}
    if request_id is not None:
        frame["id"] = request_id
    frame.update(fields)
    return orjson.dumps(frame)


def error(request_id: RequestId | None, err: PullyError) -> bytes:
    return reply("error", request_id, code=err.code, message=err.message)


def welcome(client_id: str, node_id: str, user: str | None = None) -> bytes:
    frame: dict[str, Any] = {
        "type": "welcome", "client": client_id, "node": node_id, "protocol": PROTOCOL_VERSION,
    }  # fmt: skip
    if user is not None:
        frame["user"] = user
    return orjson.dumps(frame)


def presence_info(client_id: str, user: str | None) -> bytes:
    """A presence entry, as stored and as listed: ``{"client", "user"}``."""
    return orjson.dumps({"client": client_id, "user": user})


def presence_event(kind: str, channel: str, info: bytes) -> bytes:
    """A ``join``/``leave`` frame: ``{"type","channel","client","user"}`` from a presence entry."""
    return b'{"type":"' + kind.encode() + b'","channel":' + orjson.dumps(channel) + b"," + info[1:]


def _with_list(head: dict[str, Any], key: str, items: list[bytes]) -> bytes:
    """``head`` plus ``key`` holding already-encoded JSON ``items``, spliced without re-encoding."""
    return orjson.dumps(head)[:-1] + b',"' + key.encode() + b'":[' + b",".join(items) + b"]}"


def presence_reply(request_id: RequestId | None, channel: str, entries: list[bytes]) -> bytes:
    head: dict[str, Any] = {"type": "presence"}
    if request_id is not None:
        head["id"] = request_id
    head["channel"] = channel
    return _with_list(head, "clients", entries)


def history_reply(
    request_id: RequestId | None, channel: str, offset: int, epoch: str, messages: list[bytes]
) -> bytes:
    head: dict[str, Any] = {"type": "history"}
    if request_id is not None:
        head["id"] = request_id
    head.update(channel=channel, offset=offset, epoch=epoch)
    return _with_list(head, "messages", messages)


def unsubscribed(channel: str, reason: str, **fields: Any) -> bytes:
    """An ``unsubscribed`` frame the server sends on its own (no request ``id``): the node ended
    the subscription, ``reason`` says why (``forbidden``: a refreshed token no longer allows the
    channel)."""
    return orjson.dumps({"type": "unsubscribed", "channel": channel, "reason": reason, **fields})


def insufficient_state(channel: str) -> bytes:
    """The node cannot vouch that the subscriber got every message of ``channel`` since its
    last one (it missed some and history no longer holds them, or the epoch changed): the
    subscription ended, and the client subscribes again at once with ``since`` to learn the
    truth (``recovered``)."""
    return unsubscribed(channel, "insufficient_state", resubscribe=True)


def reconnect(reason: str) -> bytes:
    return orjson.dumps({"type": "reconnect", "reason": reason})


def message_head(channel: str, data: bytes) -> bytes:
    """The part of a ``message`` frame before the offset: built once per publish."""
    return (
        b'{"type":"message","channel":' + orjson.dumps(channel) + b',"data":' + data + b',"offset":'
    )


def message(channel: str, data: bytes, offset: int, epoch: str) -> bytes:
    """A complete ``message`` frame payload (brokers build the same bytes, Redis in Lua)."""
    return message_head(channel, data) + message_tail(offset, epoch)


def message_tail(offset: int, epoch: str) -> bytes:
    return b"%d" % offset + b',"epoch":"' + epoch.encode() + b'"}'


_HEAD_SHORT: Final = struct.Struct("!BB")
_HEAD_MEDIUM: Final = struct.Struct("!BBH")
_HEAD_LONG: Final = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """RFC 6455 unmasked, unfragmented text frame around ``payload`` (server to client)."""
    n = len(payload)
    if n < 126:
        return _HEAD_SHORT.pack(0x81, n) + payload
    if n <= 0xFFFF:
        return _HEAD_MEDIUM.pack(0x81, 126, n) + payload
    return _HEAD_LONG.pack(0x81, 127, n) + payload


def server_subscribed(channel: str, position: Position, recovered: bool | None) -> bytes:
    """The node subscribed the connection on its own (``/api/subscribe``, the token's or the
    connect proxy's ``subscribe`` list): a ``subscribed`` frame with ``"server": true``, no id."""
    frame: dict[str, Any] = {
        "type": "subscribed", "channel": channel, "server": True,
        "offset": position.offset, "epoch": position.epoch,
    }  # fmt: skip
    if recovered is not None:
        frame["recovered"] = recovered
    return orjson.dumps(frame)


def server_unsubscribed(channel: str, reason: str | None = None) -> bytes:
    """A server-side subscription ended by the node (``reason`` absent: ``/api/unsubscribe``)."""
    frame: dict[str, Any] = {"type": "unsubscribed", "channel": channel, "server": True}
    if reason is not None:
        frame["reason"] = reason
    return orjson.dumps(frame)


MAX_RECOVER = 1000


def recover_positions(raw: str | None) -> dict[str, Position]:
    """The handshake's ``recover`` query parameter: JSON ``{channel: {"offset", "epoch"}}``, the
    last positions a reconnecting client saw on its server-side subscriptions (at most
    ``MAX_RECOVER``). Raises :class:`BadRequest` naming the problem."""
    if raw is None:
        return {}
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"query parameter 'recover' is not JSON: {exc}") from None
    if not isinstance(doc, dict) or len(doc) > MAX_RECOVER:
        raise BadRequest(
            f"query parameter 'recover' must be an object of at most {MAX_RECOVER} channels"
        )
    positions = {}
    for channel, since in doc.items():
        check_channel(channel, "recover")
        positions[channel] = _since(since)
    return positions
