"""The frame reader against a real `pully serve`, over raw sockets: fragments, control frames
between them, headers split over many TCP writes, size limits over fragments, and every RFC 6455
violation answered with the close code the RFC asks for; the node logs no traceback and keeps
serving. Plus the slow-consumer cut (``drop_unsent``) on a real socket, and the version guard."""

from __future__ import annotations

import asyncio
import errno
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado.iostream import IOStream, StreamClosedError

from pully_tornado.outbox import drop_unsent
from pully_tornado.protocol import text_frame
from pully_tornado.wsrules import allowed_close_code

from .rawws import BINARY, CLOSE, PING, PONG, TEXT, Frame, RawWebSocket, close_payload, frame
from .support import ROOT, PullyProcess, wait_for

FRAME_CAP = 65536  # PULLY_MAX_FRAME_BYTES of the node under test
BUFFER_CAP = 65536  # its PULLY_MAX_BUFFER_BYTES, the smallest allowed
LOG_PROBLEMS = ("Traceback", "exception was never retrieved", "Exception in callback")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PullyProcess]:
    env = {
        "PULLY_MAX_FRAME_BYTES": str(FRAME_CAP),
        "PULLY_MAX_MESSAGE_BYTES": str(FRAME_CAP),
        "PULLY_MAX_BUFFER_BYTES": str(BUFFER_CAP),
    }
    proc = PullyProcess(tmp_path_factory.mktemp("framing"), name="framing", env=env).start()
    yield proc
    proc.stop()


def connect(node: PullyProcess, extensions: str | None = None) -> RawWebSocket:
    client = RawWebSocket(node.port, extensions=extensions)
    assert client.recv_json()["type"] == "welcome"
    return client


def assert_serving(node: PullyProcess) -> None:
    """No traceback in the log, /healthz answers, and a new client is served."""
    log = node.log()
    for problem in LOG_PROBLEMS:
        assert problem not in log, log
    health = node.health()
    assert health is not None and health["status"] == "ok", health
    client = connect(node)
    try:
        client.send_json({"type": "ping", "id": "probe"})
        assert client.recv_json() == {"type": "pong", "id": "probe"}
    finally:
        client.close()


@pytest.fixture
def healthy(node: PullyProcess) -> Iterator[PullyProcess]:
    yield node
    assert_serving(node)


def closed_with(
    node: PullyProcess, data: bytes, chunk: int | None = None, extensions: str | None = None
) -> Frame:
    """Send ``data`` (on a connection that offered ``extensions``); return the server's close
    frame, after checking that the server closes the connection once the client does."""
    client = connect(node, extensions)
    try:
        client.send(data, chunk=chunk)
        closing, _ = client.until_close()
        client.sock.shutdown(socket.SHUT_WR)
        assert client.rest() == b"", "nothing after the close frame"
        return closing
    finally:
        client.close()


def ping(request_id: str, **extra: object) -> bytes:
    return orjson.dumps({"type": "ping", "id": request_id, **extra})


# -- what is accepted --------------------------------------------------------------------------


def test_fragments_are_reassembled_with_a_ping_between(healthy: PullyProcess) -> None:
    message = ping("frag-é€")  # multi-byte characters: one is split between fragments
    cut = message.index("€".encode()) + 1
    client = connect(healthy)
    try:
        client.send(
            frame(TEXT, message[:5], fin=False)
            + frame(0, message[5:cut], fin=False)
            + frame(PING, b"between")
            + frame(0, message[cut:])
        )
        assert client.recv_frame() == Frame(True, PONG, b"between")
        assert client.recv_json() == {"type": "pong", "id": "frag-é€"}
    finally:
        client.close()


def test_headers_split_over_one_byte_tcp_writes(healthy: PullyProcess) -> None:
    client = connect(healthy)
    try:
        long_id = "b" * 150  # a 16-bit length
        data = frame(TEXT, ping("a")) + frame(PING, b"p") + frame(TEXT, ping(long_id))
        client.send(data, chunk=1, pause=0.001)
        assert client.recv_json() == {"type": "pong", "id": "a"}
        assert client.recv_frame() == Frame(True, PONG, b"p")
        assert client.recv_json() == {"type": "pong", "id": long_id}
    finally:
        client.close()


def test_a_message_at_the_cap_passes_over_fragments(healthy: PullyProcess) -> None:
    client = connect(healthy)
    try:
        first = FRAME_CAP - 10
        between = frame(PING, b"p" * 125)  # not counted in the message around it
        client.send(frame(TEXT, b" " * first, fin=False) + between + frame(0, b" " * 10))
        assert client.recv_frame() == Frame(True, PONG, b"p" * 125)
        reply = client.recv_json()  # not a close: the protocol layer answers it
        assert reply["type"] == "error", reply
    finally:
        client.close()


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999])
def test_a_client_close_is_echoed(healthy: PullyProcess, code: int) -> None:
    client = connect(healthy)
    try:
        client.send(frame(CLOSE, close_payload(code, "bye ✓".encode())))
        closing, _ = client.until_close()
        assert closing.close_code == code
        assert client.rest() == b"", "the server closes the connection"
    finally:
        client.close()


def test_an_empty_close_is_echoed_empty(healthy: PullyProcess) -> None:
    client = connect(healthy)
    try:
        client.send(frame(CLOSE))
        closing, _ = client.until_close()
        assert closing.payload == b""
        assert client.rest() == b""
    finally:
        client.close()


# -- what is refused, and with which close code ---------------------------------------------

VIOLATIONS = {
    "unmasked": (frame(TEXT, ping("x"), masked=False), 1002),
    "rsv1": (frame(TEXT, ping("x"), rsv=4), 1002),
    "rsv2": (frame(TEXT, ping("x"), rsv=2), 1002),
    "rsv3": (frame(TEXT, ping("x"), rsv=1), 1002),
    "opcode-3": (frame(0x3, b"x"), 1002),
    "opcode-7": (frame(0x7, b"x"), 1002),
    "opcode-0xb": (frame(0xB, b"x"), 1002),
    "opcode-0xf": (frame(0xF, b"x"), 1002),
    "ping-over-125-bytes": (frame(PING, b"x" * 126), 1002),
    "fragmented-ping": (frame(PING, b"x", fin=False), 1002),
    "fragmented-close": (frame(CLOSE, close_payload(1000), fin=False), 1002),
    "continuation-of-nothing": (frame(0, b"x"), 1002),
    "new-message-inside-fragmented": (
        frame(TEXT, b"{", fin=False) + frame(BINARY, b"x"),
        1002,
    ),
    "garbage": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 1002),
    "text-not-utf8": (frame(TEXT, b'"\xff\xfe"'), 1007),
    "overlong-utf8": (frame(TEXT, b'"\xc0\xaf"'), 1007),
    "surrogate-in-utf8": (frame(TEXT, b'"\xed\xa0\x80"'), 1007),
    "utf8-broken-across-fragments": (
        frame(TEXT, b'"\xe2\x82', fin=False) + frame(0, b'("'),
        1007,
    ),
    "close-reason-not-utf8": (frame(CLOSE, close_payload(1000, b"\xff")), 1007),
    "close-with-1-byte": (frame(CLOSE, b"\x03"), 1002),
    **{
        f"close-code-{code}": (frame(CLOSE, close_payload(code)), 1002)
        for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535)
    },
    # checked from the header: no payload is sent at all
    "over-the-cap": (frame(TEXT, length=FRAME_CAP + 1), 1009),
    "64-bit-length": (frame(BINARY, length=2**63), 1009),
    "over-the-cap-across-fragments": (
        frame(TEXT, b" " * (FRAME_CAP // 2), fin=False)
        + frame(0, b" " * (FRAME_CAP // 2), fin=False)
        + frame(0, length=1),
        1009,
    ),
}


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_violations_are_closed_with_their_code(healthy: PullyProcess, name: str) -> None:
    data, code = VIOLATIONS[name]
    closing = closed_with(healthy, data)
    assert closing.close_code == code, closing
    assert closing.payload[2:].decode(), "a short reason"


def test_a_violation_split_over_one_byte_writes_is_caught(healthy: PullyProcess) -> None:
    data = frame(TEXT, ping("ok")) + frame(TEXT, b"x" * 300, masked=False)
    client = connect(healthy)
    try:
        client.send(data, chunk=1)
        closing, before = client.until_close()
        assert [f.json() for f in before if f.opcode == TEXT] == [{"type": "pong", "id": "ok"}]
        assert closing.close_code == 1002
    finally:
        client.close()


def test_nothing_after_a_violation_is_processed_and_the_wait_is_bounded(
    healthy: PullyProcess,
) -> None:
    client = connect(healthy)
    try:
        client.send(frame(0x5, b"x") + frame(TEXT, ping("after")))
        closing, before = client.until_close()
        assert closing.close_code == 1002 and before == []
        # the client stays silent: the node closes anyway, after Tornado's close wait (5 s)
        assert client.rest() == b""
    finally:
        client.close()


# -- fuzzing: any bytes after a valid handshake ----------------------------------------------

# mostly well-formed frames, so that the broken one comes after some that were handled
frames = st.builds(
    frame,
    opcode=st.sampled_from([0x0, 0x0, 0x1, 0x1, 0x1, 0x2, 0x8, 0x9, 0x9, 0xA, 0x3, 0xB]),
    payload=st.one_of(
        st.binary(max_size=140),
        st.text(max_size=40).map(str.encode),
        st.sampled_from([ping("f"), b'{"type":"subscribe","channel":"fuzz"}', b"\x03\xe8ok"]),
    ),
    fin=st.sampled_from([True, True, True, False]),
    rsv=st.sampled_from([0] * 12 + [1, 4]),
    masked=st.sampled_from([True] * 12 + [False]),
)
streams = st.one_of(st.binary(min_size=1, max_size=300), st.lists(frames, max_size=5).map(b"".join))


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=streams, chunk=st.integers(1, 64))
def test_any_bytes_get_whole_frames_and_a_clean_end(
    node: PullyProcess, data: bytes, chunk: int
) -> None:
    client = connect(node)
    try:
        try:  # the node may close first (a close frame, a protocol error): allowed
            client.send(data, chunk=chunk)
            client.sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except OSError as exc:
            assert exc.errno == errno.ENOTCONN, exc
        got = client.frames_to_end()
        for i, received in enumerate(got):
            if received.opcode == CLOSE:
                assert i == len(got) - 1, "nothing after a close frame"
                code = received.close_code
                assert code is None or allowed_close_code(code), code
    finally:
        client.close()
    for problem in LOG_PROBLEMS:
        assert problem not in node.log()


def test_the_node_serves_after_the_fuzzing(node: PullyProcess) -> None:
    assert_serving(node)


# -- the slow-consumer cut ---------------------------------------------------------------------


def big_history(node: PullyProcess) -> RawWebSocket:
    """Publish 100 messages of 60 KB to ``big``, and return a client with a 4 KB window that
    asks for them: one 6 MB reply, far past PULLY_MAX_BUFFER_BYTES. The kernel takes its first
    part (a loopback socket takes up to 4 MB, the most net.ipv4.tcp_wmem allows by default), and
    the rest does not fit in the buffer."""
    publisher = connect(node)
    try:
        for i in range(100):
            data = {"i": i, "pad": "x" * 60_000}
            publisher.send_json({"type": "publish", "channel": "big", "data": data, "id": i})
        assert [publisher.recv_json()["type"] for _ in range(100)] == ["ack"] * 100
    finally:
        publisher.close()
    slow = RawWebSocket(node.port, rcvbuf=4096)
    slow.send_json({"type": "history", "channel": "big", "id": "h", "limit": 100})
    return slow


def test_a_slow_consumer_gets_the_rest_of_a_torn_frame_then_4008(healthy: PullyProcess) -> None:
    """What the kernel did not take of the reply still goes out, whole, before the close."""
    slow = big_history(healthy)
    try:
        closing, before = slow.until_close()
        assert [f.json()["type"] for f in before] == ["welcome", "history"]
        assert [m["data"]["i"] for m in before[1].json()["messages"]] == list(range(100))
        assert (closing.close_code, closing.payload[2:]) == (4008, b"slow consumer")
        slow.send(frame(CLOSE, close_payload(4008)))
        assert slow.rest() == b""
    finally:
        slow.close()


def test_a_slow_consumer_that_never_reads_is_let_go_after_the_wait(
    processes: Callable[..., PullyProcess],
) -> None:
    # with pings off, the wait for the close frame to be read is Tornado's 5 s
    node = processes(env={"PULLY_PING_INTERVAL": "0", "PULLY_MAX_BUFFER_BYTES": str(BUFFER_CAP)})
    slow = big_history(node)
    try:
        wait_for(lambda: "slow consumer" in node.log(), 10, what="the slow consumer found")
        connections = lambda: (node.health() or {}).get("connections")  # noqa: E731
        wait_for(lambda: connections() == 0, 15, what="the connection let go")
    finally:
        slow.close()


@pytest.mark.gen_test
async def test_drop_unsent_keeps_whole_frames_and_fails_the_dropped_writes() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(server.getsockname())
        writer, _ = server.accept()
    stream = IOStream(writer)
    try:
        # frames of odd sizes, joined in writes of seven, until the kernel holds no more
        sizes = [700 + 37 * (i % 13) for i in range(5000)]
        frames = [text_frame(orjson.dumps({"i": i, "pad": "x" * n})) for i, n in enumerate(sizes)]
        writes = []
        for i in range(0, len(frames), 7):
            writes.append(stream.write(b"".join(frames[i : i + 7])))
            if len(stream._write_buffer) > 200_000:
                break
        assert stream.writing(), "the kernel stopped taking data"
        assert drop_unsent(stream) > 100_000
        closing = stream.write(b"\x88\x02\x0f\xa8")  # close 4008
        reader.setblocking(False)
        received = bytearray()
        while not received.endswith(b"\x88\x02\x0f\xa8"):
            try:
                received += reader.recv(65536)
            except BlockingIOError:
                await asyncio.sleep(0.005)
        await closing
        seen, pos = 0, 0
        while received[pos] == 0x81:  # parse every text frame: each is whole
            length, pos = received[pos + 1], pos + 2
            if length == 126:
                length, pos = int.from_bytes(received[pos : pos + 2], "big"), pos + 2
            assert orjson.loads(received[pos : pos + length])["i"] == seen
            seen, pos = seen + 1, pos + length
        assert bytes(received[pos:]) == b"\x88\x02\x0f\xa8", "the close frame right after"
        outcomes = [w.exception() if w.done() else "pending" for w in writes]
        first_dropped = next(i for i, o in enumerate(outcomes) if o is not None)
        assert seen == 7 * first_dropped, "every write up to the one in flight, whole"
        assert all(isinstance(o, StreamClosedError) for o in outcomes[first_dropped:]), outcomes
    finally:
        stream.close()
        reader.close()


def test_an_unchecked_tornado_version_is_refused_at_import() -> None:
    code = (
        "import tornado; tornado.version_info = (7, 0, 0, 0); tornado.version = '7.0'\n"
        "import pully_tornado.wsframes"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "ImportError: pully_tornado needs Tornado >=6.4,<7" in result.stderr
    assert "Tornado 7.0 is installed" in result.stderr
