"""The frame reader's hot path alone: ``python -m bench.frame_reader`` parses 20,000 masked
text frames of about 60 bytes with ``ChunkedProtocol._consume`` and a handler that does nothing,
and prints the best time per frame over 60 runs (docs/performance.md, "Reading client frames")."""

from __future__ import annotations

import asyncio
import os
import struct
import time
from typing import Any

from tornado.util import _websocket_mask
from tornado.websocket import _WebSocketParams

from pully_tornado.wsframes import ChunkedProtocol

FRAMES = 20_000
RUNS = 60


class NoOpHandler:
    client_id = "bench"

    def on_message(self, message: Any) -> None:
        pass

    def on_ping(self, data: bytes) -> None:
        pass

    def on_pong(self, data: bytes) -> None:
        pass

    def log_exception(self, *args: Any) -> None:
        raise SystemExit(f"the handler failed: {args}")

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        raise SystemExit(f"closed with {code} {reason}")

    def on_ws_connection_close(self, code: int | None = None, reason: str | None = None) -> None:
        pass


def masked_text_frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + _websocket_mask(mask, payload)


async def main() -> None:
    data = b"".join(
        masked_text_frame(b'{"type":"publish","channel":"chat","data":{"n":%d}}' % i)
        for i in range(FRAMES)
    )
    protocol = ChunkedProtocol(NoOpHandler(), False, _WebSocketParams(max_message_size=1 << 20))
    best = float("inf")
    for _ in range(RUNS):
        start = time.perf_counter()
        await protocol._consume(data)
        best = min(best, time.perf_counter() - start)
    print(f"frame reader: {best / FRAMES * 1e9:.0f} ns per frame (best of {RUNS})")


if __name__ == "__main__":
    asyncio.run(main())
