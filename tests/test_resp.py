"""The hand-written Redis link (``broker/resp.py``) against real redis-server processes.

Pipelined replies matched in order, error replies to their own caller, NOSCRIPT recovery, a
command timeout, a hung (SIGSTOPped) Redis, the reconnect and close behaviour, the keepalive
watchdog, and ``rediss://`` (a throwaway CA made with ``openssl``) and ``unix://`` URLs. Waits
are bounded; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pully_tornado.broker import resp
from pully_tornado.broker.resp import CommandLink, LinkDown, RedisReplyError, open_link

from .cluster_support import tls_files
from .support import RedisServer, free_port, wait_for

SHORT = 0.5  # the command/connect timeout patched in where a test waits for one


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resp, "COMMAND_TIMEOUT", SHORT)
    monkeypatch.setattr(resp, "CONNECT_TIMEOUT", SHORT)


@pytest.fixture
def stoppable(fresh_redis: RedisServer) -> Iterator[Callable[[], None]]:
    """SIGSTOP the test's own redis-server (call the result); SIGCONT whatever happens."""
    proc = fresh_redis.proc
    assert proc is not None

    def pause() -> None:
        proc.send_signal(signal.SIGSTOP)

    yield pause
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)


def spawn(workdir: Path, args: list[str], ping: Callable[[], Any]) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.Popen(
        [binary, *args, "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            return bool(ping())
        except redis.RedisError:
            assert proc.poll() is None, f"redis-server {args} exited"
            return False

    try:
        wait_for(answers, 10, what=f"redis-server {args}")
    except BaseException:
        proc.kill()
        raise
    return proc


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """redis-server with TLS only, its certificate signed by a CA made for this module."""
    d = tls_files(tmp_path_factory.mktemp("tls"))
    port = free_port()
    args = ["--port", "0", "--bind", "127.0.0.1", "--tls-port", str(port),
            "--tls-cert-file", str(d / "server.crt"), "--tls-key-file", str(d / "server.key"),
            "--tls-ca-cert-file", str(d / "ca.crt"), "--tls-auth-clients", "no"]  # fmt: skip
    client = redis.Redis(
        host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(d / "ca.crt"), socket_timeout=5
    )
    proc = spawn(d, args, client.ping)
    yield port, d / "ca.crt"
    stop_process(proc)


@pytest.fixture
def unix_redis() -> Iterator[str]:
    """redis-server on a unix socket only (a short path: sun_path holds 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="pully-resp-"))
    sock = d / "redis.sock"
    client = redis.Redis(unix_socket_path=str(sock), socket_timeout=5)
    proc = spawn(d, ["--port", "0", "--unixsocket", str(sock)], client.ping)
    yield str(sock)
    stop_process(proc)
    shutil.rmtree(d, ignore_errors=True)


# -- pipelining -------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_concurrent_commands_get_their_own_replies(redis_server: RedisServer) -> None:
    link = CommandLink(redis_server.url)
    try:
        replies = await asyncio.gather(*(link.call(b"ECHO", f"r-{i}") for i in range(2000)))
        assert replies == [f"r-{i}".encode() for i in range(2000)]
        # and in the order issued: each INCR sees every earlier one
        key = "resp:order"
        await link.call(b"DEL", key)
        counts = await asyncio.gather(*(link.call(b"INCR", key) for _ in range(500)))
        assert counts == list(range(1, 501))
    finally:
        await link.close()


@pytest.mark.gen_test(timeout=30)
async def test_an_error_reply_goes_to_its_caller_only(redis_server: RedisServer) -> None:
    link = CommandLink(redis_server.url)
    try:
        await link.call(b"SET", "resp:text", "not a number")
        calls = []
        for i in range(300):
            if i % 3 == 1:
                calls.append(link.call(b"INCR", "resp:text"))
            elif i % 3 == 2:
                calls.append(link.call(b"NOSUCHCOMMAND", i))
            else:
                calls.append(link.call(b"ECHO", i))
        results = await asyncio.gather(*calls, return_exceptions=True)
        for i, result in enumerate(results):
            if i % 3 == 0:
                assert result == str(i).encode()
            else:
                assert isinstance(result, RedisReplyError), (i, result)
                expected = "not an integer" if i % 3 == 1 else "unknown command"
                assert expected in str(result), (i, result)
        # an error reply is not a connection problem: the same connection goes on
        assert await link.call(b"GET", "resp:text") == b"not a number"
    finally:
        await link.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_cancelled_call_does_not_shift_the_replies_behind_it(
    redis_server: RedisServer,
) -> None:
    link = CommandLink(redis_server.url)
    try:
        first = asyncio.ensure_future(link.call(b"ECHO", "first"))
        slow = asyncio.ensure_future(link.call(b"BLPOP", "resp:empty", "0.3"))
        after = asyncio.ensure_future(link.call(b"ECHO", "after"))
        assert await first == b"first"
        slow.cancel()  # its reply (nil, when the BLPOP times out in Redis) still comes
        assert await after == b"after"
        assert slow.cancelled()
        assert await link.call(b"ECHO", "next") == b"next"
    finally:
        await link.close()


# -- scripts ----------------------------------------------------------------------------------

BODY = b"return redis.call('INCRBY', KEYS[1], ARGV[1])"
SHA = hashlib.sha1(BODY).hexdigest().encode()


@pytest.mark.gen_test(timeout=30)
async def test_a_script_unknown_to_redis_is_loaded_and_run_once(redis_server: RedisServer) -> None:
    link = CommandLink(redis_server.url)
    try:
        await link.call(b"DEL", "resp:script")
        await link.call(b"SCRIPT", b"FLUSH")
        assert await link.script(SHA, BODY, ["resp:script"], [5]) == 5
        await link.call(b"SCRIPT", b"FLUSH")  # as after a restart without persistence
        assert await link.script(SHA, BODY, ["resp:script"], [2]) == 7
        assert await link.call(b"SCRIPT", b"EXISTS", SHA) == [1]
        with pytest.raises(RedisReplyError, match="not an integer"):
            await link.script(SHA, BODY, ["resp:script"], ["x"])
        assert await link.call(b"GET", "resp:script") == b"7"
    finally:
        await link.close()


# -- timeouts, a hung Redis, reconnecting -----------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_a_command_timeout_fails_the_pipeline_and_the_next_call_reconnects(
    redis_server: RedisServer, short_timeouts: None
) -> None:
    link = CommandLink(redis_server.url)
    try:
        first_id = await link.call(b"CLIENT", b"ID")
        blocked = asyncio.ensure_future(link.call(b"BLPOP", "resp:never", 0))
        behind = asyncio.ensure_future(link.call(b"ECHO", "behind"))
        with pytest.raises(LinkDown, match="did not answer within"):
            await blocked
        with pytest.raises(LinkDown):  # queued behind it: may or may not have run, fails too
            await behind
        assert await link.call(b"ECHO", "again") == b"again"
        assert await link.call(b"CLIENT", b"ID") != first_id
    finally:
        await link.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_hung_redis_fails_callers_instead_of_hanging(
    fresh_redis: RedisServer, stoppable: Callable[[], None], short_timeouts: None
) -> None:
    link = CommandLink(fresh_redis.url)
    try:
        assert await link.call(b"PING") == b"PONG"
        stoppable()
        pending = [link.call(b"ECHO", i) for i in range(20)]
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(r, LinkDown) for r in results), results
        # reconnecting to the stopped server: the kernel accepts, Redis never answers the PING
        with pytest.raises(LinkDown, match="cannot connect"):
            await link.call(b"PING")
        assert fresh_redis.proc is not None
        fresh_redis.proc.send_signal(signal.SIGCONT)
        assert await link.call(b"ECHO", "back") == b"back"
    finally:
        await link.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_lost_connection_fails_pending_calls_and_the_next_one_reconnects(
    fresh_redis: RedisServer,
) -> None:
    link = CommandLink(fresh_redis.url)
    admin = fresh_redis.client()
    try:
        first_id = await link.call(b"CLIENT", b"ID")
        blocked = asyncio.ensure_future(link.call(b"BLPOP", "resp:never", 0))
        await asyncio.sleep(0.05)  # let the BLPOP reach Redis; the kill below waits for it
        wait_for(lambda: admin.client_kill_filter(_id=first_id), 10, what="CLIENT KILL")
        with pytest.raises(LinkDown):
            await blocked
        second_id = await link.call(b"CLIENT", b"ID")
        assert second_id != first_id

        fresh_redis.restart()  # same port, a new process: the old connection is gone
        with pytest.raises(LinkDown):
            await link.call(b"PING")  # nothing is retried: this one sees the dead connection
        assert await link.call(b"PING") == b"PONG"

        link.reset()  # a caller saw Redis lost: drop the connection, the next call reconnects
        assert await link.call(b"CLIENT", b"ID") not in (first_id, second_id)
    finally:
        admin.close()
        await link.close()


@pytest.mark.gen_test(timeout=30)
async def test_close_fails_pending_calls_and_closes_the_connection(
    redis_server: RedisServer,
) -> None:
    link = CommandLink(redis_server.url)
    admin = redis_server.client()
    try:
        name = "resp-close-test"
        await link.call(b"CLIENT", b"SETNAME", name)
        blocked = asyncio.ensure_future(link.call(b"BLPOP", "resp:never", 0))
        await asyncio.sleep(0.05)
        await link.close()
        with pytest.raises(LinkDown):
            await blocked

        def gone() -> bool:
            return all(c.get("name") != name for c in admin.client_list())

        wait_for(gone, 10, what="the closed link's connection to go")
        # close is not final: like after reset(), a later call connects again
        assert await link.call(b"ECHO", "reopened") == b"reopened"
        await link.close()
    finally:
        admin.close()


@pytest.mark.gen_test(timeout=30)
async def test_no_server_is_a_link_down(short_timeouts: None) -> None:
    link = CommandLink(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(LinkDown, match="cannot connect"):
        await link.call(b"PING")
    await link.close()


# -- open_link and the watchdog ---------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_open_link_authenticates_and_selects_the_db(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password="s3cret").start()
    try:
        link = await open_link(f"redis://:s3cret@127.0.0.1:{server.port}/3")
        try:
            await link.request(b"SET", "resp:db", "three")
        finally:
            link.close()
        assert redis.Redis(port=server.port, password="s3cret", db=3).get("resp:db") == b"three"
        with pytest.raises(RedisReplyError):
            await open_link(f"redis://:wrong@127.0.0.1:{server.port}/0")
        # the command link reports a refused AUTH as a link that cannot connect
        with pytest.raises(LinkDown, match="cannot connect"):
            await CommandLink(f"redis://:wrong@127.0.0.1:{server.port}/0").call(b"PING")
    finally:
        server.kill()


@pytest.mark.gen_test(timeout=30)
async def test_the_watchdog_pings_a_quiet_link_and_aborts_a_hung_one(
    fresh_redis: RedisServer, stoppable: Callable[[], None]
) -> None:
    link = await open_link(fresh_redis.url)
    try:
        link.watch(ping_after=0.05, dead_after=3.0)
        pongs = 0
        async with asyncio.timeout(10):
            while pongs < 3:  # quiet link: the watchdog pings and Redis answers
                link.parser.feed(await link.read())
                while (reply := link.parser.gets()) is not False:
                    assert reply == b"PONG"
                    pongs += 1
        stoppable()
        with pytest.raises(LinkDown, match="did not answer a ping within 3s"):
            async with asyncio.timeout(10):
                while True:
                    link.parser.feed(await link.read())
    finally:
        link.close()


# -- URL forms --------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=30)
async def test_rediss_verifies_the_server_certificate(
    tls_redis: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, ca = tls_redis
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    untrusted = CommandLink(f"rediss://127.0.0.1:{port}/0")
    with pytest.raises(LinkDown, match="CERTIFICATE_VERIFY_FAILED"):
        await untrusted.call(b"PING")

    # trusted through the URL (redis-py's ssl_ca_certs) or the system's trust store
    for url, env in (
        (f"rediss://127.0.0.1:{port}/2?ssl_ca_certs={ca}", None),
        (f"rediss://localhost:{port}/2", str(ca)),
    ):
        if env is not None:
            monkeypatch.setenv("SSL_CERT_FILE", env)
        link = CommandLink(url)
        try:
            replies = await asyncio.gather(*(link.call(b"ECHO", i) for i in range(200)))
            assert replies == [str(i).encode() for i in range(200)]
            await link.call(b"SET", "resp:tls", url)
            assert await link.call(b"CLIENT", b"INFO") != b""
        finally:
            await link.close()
    admin = redis.Redis(port=port, ssl=True, ssl_ca_certs=str(ca), db=2)
    assert admin.get("resp:tls") == f"rediss://localhost:{port}/2".encode()
    admin.close()


@pytest.mark.gen_test(timeout=30)
async def test_unix_socket_url(unix_redis: str) -> None:
    link = CommandLink(f"unix://{unix_redis}?db=4")
    try:
        replies = await asyncio.gather(*(link.call(b"ECHO", i) for i in range(200)))
        assert replies == [str(i).encode() for i in range(200)]
        await link.call(b"SET", "resp:unix", "yes")
        with pytest.raises(RedisReplyError):
            await link.call(b"INCR", "resp:unix")
        assert await link.call(b"GET", "resp:unix") == b"yes"
    finally:
        await link.close()
    assert redis.Redis(unix_socket_path=unix_redis, db=4).get("resp:unix") == b"yes"
