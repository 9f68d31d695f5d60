"""permessage-deflate (RFC 7692) as the node speaks it: ``PULLY_COMPRESSION=on``.

A message is compressed **once per node**: the node always answers ``server_no_context_takeover``,
so no compressed frame depends on what one connection was sent before, and the same bytes go to
every subscriber that negotiated the extension (others get the plain frame; each message says
in its RSV1 bit which it is). One compressor serves the node: a full flush after each message
resets its dictionary, which is what "no context takeover" means for the output.

Clients may compress what they send. The node asks for the smallest window the client lets it
set (``client_max_window_bits=CLIENT_WINDOW_BITS`` when offered) and for no context takeover
when the client offers it, so a connection's inflate state is small or none; inflated messages
are bounded by ``PULLY_MAX_MESSAGE_BYTES`` before they are buffered (a "zip bomb" is closed
with 1009, broken deflate data with 1007).

Offers the node cannot honour are declined (the next offer is tried; none left: no compression),
never half-accepted: a ``server_max_window_bits`` under 15 (one shared compressed frame cannot
suit several windows), unknown or repeated parameters, values out of range.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from . import config_values as values
from .config_values import Option
from .protocol import _HEAD_LONG, _HEAD_MEDIUM, _HEAD_SHORT

# their rows of the OPTIONS table (pully_tornado.settings places them)
COMPRESSION_OPTIONS: tuple[Option, ...] = (
    Option(
        "compression",
        "PULLY_COMPRESSION",
        values.boolean,
        "off",
        "Negotiate permessage-deflate (no context takeover): each message is compressed once "
        "per node for the clients that offer it (docs/protocol.md, Compression).",
    ),
    Option(
        "compression_min_bytes",
        "PULLY_COMPRESSION_MIN_BYTES",
        values.integer(0),
        "256",
        "Messages smaller than this go uncompressed.",
    ),
)

SERVER_WINDOW_BITS = 15
CLIENT_WINDOW_BITS = 10  # what the node asks clients to compress with when they let it choose
COMPRESSION_LEVEL = 6
_TAIL = b"\x00\x00\xff\xff"
_PARAMS = frozenset({
    "server_no_context_takeover", "client_no_context_takeover",
    "server_max_window_bits", "client_max_window_bits",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Agreement:
    """What one handshake agreed: the response header, and how the client compresses."""

    response: str
    client_window_bits: int
    client_takeover: bool  # the client keeps its window between messages

    def inflater(self, max_size: int) -> Inflater:
        return Inflater(self.client_window_bits, self.client_takeover, max_size)


def negotiate(header: str | None) -> Agreement | None:
    """The first acceptable permessage-deflate offer in ``Sec-WebSocket-Extensions``, or None."""
    for offer in (header or "").split(","):
        name, *params = (part.strip() for part in offer.split(";"))
        if name.lower() == "permessage-deflate":
            agreed = _accept(params)
            if agreed is not None:
                return agreed
    return None


def _accept(params: list[str]) -> Agreement | None:
    seen: dict[str, str | None] = {}
    for param in params:
        key, eq, value = param.partition("=")
        key = key.strip().lower()
        if key not in _PARAMS or key in seen:
            return None
        seen[key] = value.strip().strip('"') if eq else None
    if "server_no_context_takeover" in seen and seen["server_no_context_takeover"] is not None:
        return None
    if "client_no_context_takeover" in seen and seen["client_no_context_takeover"] is not None:
        return None
    if "server_max_window_bits" in seen and _bits(seen["server_max_window_bits"]) != 15:
        return None  # None (no value) or under 15: the shared frames use 15
    response = ["permessage-deflate", "server_no_context_takeover"]
    takeover = "client_no_context_takeover" not in seen
    if not takeover:
        response.append("client_no_context_takeover")
    bits = 15
    if "client_max_window_bits" in seen:
        offered = seen["client_max_window_bits"]
        if offered is None:
            bits = CLIENT_WINDOW_BITS
        else:
            limit = _bits(offered)
            if limit is None:
                return None
            bits = min(limit, CLIENT_WINDOW_BITS)
        response.append(f"client_max_window_bits={bits}")
    return Agreement("; ".join(response), bits, takeover)


def _bits(value: str | None) -> int | None:
    if value is None or not value.isdigit() or not 8 <= int(value) <= 15:
        return None
    return int(value)


class Deflater:
    """The node's one compressor: ``frame(payload)`` is the compressed text frame (RSV1 set),
    or None when compressing would not make it smaller (the plain frame goes instead)."""

    __slots__ = ("_compressor",)

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(
            COMPRESSION_LEVEL, zlib.DEFLATED, -SERVER_WINDOW_BITS, 8
        )  # fmt: skip

    def frame(self, payload: bytes) -> bytes | None:
        compressor = self._compressor
        data = compressor.compress(payload) + compressor.flush(zlib.Z_FULL_FLUSH)
        data = data[:-4]  # the flush's empty stored block: RFC 7692 section 7.2.1
        n = len(data)
        if n >= len(payload):
            return None
        if n < 126:
            return _HEAD_SHORT.pack(0xC1, n) + data
        if n <= 0xFFFF:
            return _HEAD_MEDIUM.pack(0xC1, 126, n) + data
        return _HEAD_LONG.pack(0xC1, 127, n) + data


class TooLarge(Exception):
    """The message inflates past the node's limit."""


class Inflater:
    """One connection's decompression: a fresh context per message when the client does not
    take over its window, otherwise one kept (the agreed window, at most 2**bits bytes)."""

    __slots__ = ("_bits", "_kept", "_max")

    def __init__(self, bits: int, takeover: bool, max_size: int) -> None:
        self._bits = max(bits, 9)  # zlib's raw inflate wants 9 for a window of 8 (it is larger)
        self._kept = zlib.decompressobj(-self._bits) if takeover else None
        self._max = max_size

    def inflate(self, data: bytes) -> bytes:
        """The message ``data`` carries; raises :class:`TooLarge` past the limit and
        ``zlib.error`` for data that is not deflate."""
        inflater = self._kept or zlib.decompressobj(-self._bits)
        out = inflater.decompress(data + _TAIL, self._max)
        if inflater.unconsumed_tail:
            raise TooLarge
        return out
