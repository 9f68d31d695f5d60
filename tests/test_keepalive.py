"""The node-wide keepalive, against a real `pully serve`: clients that answer pings stay,
silent ones are closed with 1001 "ping timed out"."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import pytest

from .support import PullyProcess, WSClient, eventually
from .test_limits import RawSubscriber

pytestmark = pytest.mark.slow


def frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each unmasked server frame in ``data``."""
    out, i = [], 0
    while i + 2 <= len(data):
        opcode, length, i = data[i] & 0x0F, data[i + 1] & 0x7F, i + 2
        if length == 126:
            (length,), i = struct.unpack("!H", data[i : i + 2]), i + 2
        elif length == 127:
            (length,), i = struct.unpack("!Q", data[i : i + 8]), i + 8
        out.append((opcode, data[i : i + length]))
        i += length
    return out


@pytest.mark.gen_test(timeout=30)
async def test_silent_clients_are_closed_and_answering_ones_stay(
    processes: Callable[..., PullyProcess],
) -> None:
    node = processes(env={"PULLY_PING_INTERVAL": "0.8", "PULLY_PING_TIMEOUT": "0.5"})
    alive = await WSClient.connect(node.ws_url)  # Tornado's client answers pings by itself
    await alive.subscribe("kept")
    silent = RawSubscriber(node.port, "dropped")  # never reads, so never answers
    try:
        connections = lambda: (node.health() or {}).get("connections")  # noqa: E731
        await eventually(lambda: connections() == 2, 5, "both connected")
        # closed at its first unanswered ping; Tornado then waits up to 5 s for a close reply
        await eventually(lambda: connections() == 1, 10, "the silent one closed")
        received = b""
        silent.sock.settimeout(2)
        while chunk := silent.sock.recv(65536):
            received += chunk
        opcodes = [op for op, _ in frames(received)]
        assert 0x9 in opcodes, "it was pinged"
        opcode, payload = frames(received)[-1]
        assert opcode == 0x8
        assert struct.unpack("!H", payload[:2])[0] == 1001 and payload[2:] == b"ping timed out"
        await asyncio.sleep(2.5)  # several more ping rounds for the answering client
        assert (await alive.request({"type": "ping"}))["type"] == "pong"
        assert connections() == 1
    finally:
        silent.close()
