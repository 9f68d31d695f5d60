"""The `pully` command as a user runs it: real subprocesses, plus click's runner for --help."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from pully_tornado.cli import main
from pully_tornado.settings import OPTIONS

from .support import PullyProcess, RedisServer, WSClient, wait_for

PULLY = str(Path(sys.executable).with_name("pully"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PULLY_")}
    return subprocess.run(
        args, capture_output=True, text=True, timeout=30, env={**clean, **(env or {})}
    )


def test_help_lists_commands_and_every_setting() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "serve" in result.output
    result = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for opt in OPTIONS:
        assert opt.env in result.output, opt.env
        assert opt.flag in result.output or opt.field == "uvloop"
    assert "--uvloop / --no-uvloop" in result.output


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ("serve", "--port", "abc"),
            {},
            "pully: invalid --port / PULLY_PORT: 'abc' must be an integer",
        ),
        (
            ("serve",),
            {"PULLY_MAX_MESSAGE_BYTES": "lots"},
            "pully: invalid PULLY_MAX_MESSAGE_BYTES: 'lots' must be an integer",
        ),
        (
            ("serve", "--redis-url", "localhost:6379"),
            {},
            "pully: invalid --redis-url / PULLY_REDIS_URL: 'localhost:6379' must be a redis://",
        ),
        (
            ("serve", "--presence-channels", "["),
            {},
            "pully: invalid --presence-channels / PULLY_PRESENCE_CHANNELS: '[' holds '[', an "
            "invalid glob: '[' at position 1 is never closed",
        ),
        (
            ("serve",),
            {"PULLY_ALLOWED_ORIGINS": "https://*.example.com,[]"},
            "pully: invalid PULLY_ALLOWED_ORIGINS: 'https://*.example.com,[]' holds '[]', an "
            "invalid glob: '[]' is empty",
        ),
        (
            ("serve", "--host", "256.1.1.1"),
            {},
            "pully: invalid --host / PULLY_HOST: '256.1.1.1' is not an IP address or a host name",
        ),
    ],
)
def test_bad_settings_exit_2_with_one_line_naming_the_variable(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run(PULLY, *args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(message)
    assert "Traceback" not in result.stderr


def test_port_in_use_is_one_line_and_exit_2() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(PULLY, "serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"pully: invalid --port / PULLY_PORT: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    )


def test_an_address_not_on_this_machine_blames_the_host_and_exits_2() -> None:
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): a valid address that no interface here holds
    result = run(PULLY, "serve", "--host", "192.0.2.1", "--port", "0")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "pully: invalid --host / PULLY_HOST: cannot listen on 192.0.2.1:0: "
        "Cannot assign requested address"
    )


@pytest.mark.parametrize("launcher", [[sys.executable, "-m", "pully_tornado"], [PULLY]])
def test_both_launchers_start_an_embedded_node_that_logs_its_mode(
    tmp_path: Path, launcher: list[str]
) -> None:
    node = PullyProcess(tmp_path)
    node.command = lambda: [*launcher, "serve", "--host", "127.0.0.1", "--port", str(node.port)]  # type: ignore[method-assign]
    node.start()
    try:
        health = node.health()
        assert health is not None and health["mode"] == "embedded"
        log = node.log()
        assert f"serving on 127.0.0.1:{node.port}: mode=embedded broker=memory" in log
        assert f"pully node {health['node']} " in log
        assert "PULLY_ADMIN_TOKEN is unset" in log
        [dev] = [line for line in log.splitlines() if "DEVELOPMENT MODE" in line]
        assert " WARNING pully: DEVELOPMENT MODE: PULLY_JWT_SECRET is unset" in dev
    finally:
        node.stop()
    assert node.proc is not None and node.proc.returncode == 0


def test_a_node_with_a_jwt_secret_does_not_claim_development_mode(
    processes: Callable[..., PullyProcess],
) -> None:
    node = processes(env={"PULLY_JWT_SECRET": "s" * 32})
    assert "serving on" in node.log()
    assert "DEVELOPMENT MODE" not in node.log()


def test_cluster_mode_authenticates_and_logs_the_redis_url_without_its_password(
    processes: Callable[..., PullyProcess], tmp_path: Path
) -> None:
    secured = RedisServer(tmp_path / "secured", password="hunter2").start()
    try:
        node = processes(redis_url=secured.url)
        log = node.log()
        assert f"mode=cluster broker=redis://:***@127.0.0.1:{secured.port}/0" in log
        assert "hunter2" not in log
        wait_for(lambda: (node.health() or {}).get("status") == "ok", 10, what="node connected")
        wrong = processes(redis_url=f"redis://:wrong@127.0.0.1:{secured.port}/0")
        wait_for(lambda: "WRONGPASS" in wrong.log(), 10, what="the reason in the log")
        health = wrong.health()
        assert health is not None and health["broker"]["state"] == "disconnected"
    finally:
        secured.kill()


@pytest.mark.gen_test(timeout=30)
async def test_serve_uvloop_runs_the_node_on_uvloop(tmp_path: Path) -> None:
    """``--uvloop`` (installed with the ``uvloop`` extra, and the ``test`` one): the node says
    which loop it runs on, and serves a publish/subscribe round trip on it."""
    for args, loop in ((("--uvloop",), "uvloop"), ((), "asyncio")):
        node = PullyProcess(tmp_path, args=args, name=loop).start()
        try:
            assert f"loop={loop}" in node.log()
            client = await WSClient.connect(node.ws_url)
            await client.subscribe("chat")
            ack = await client.publish("chat", {"on": loop})
            [message] = await client.messages(1)
            assert (message["data"], message["offset"]) == ({"on": loop}, ack["offset"])
        finally:
            node.stop()
