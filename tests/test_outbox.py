"""``pully outbox init``: the outbox table, its dead-letter table and the NOTIFY trigger, on a
real PostgreSQL cluster (tests/pg_support.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from pully_tornado.consumers.outbox_schema import InvalidTable, check_table, init_sql

from .pg_support import PostgresCluster, postgres_cluster

PULLY = [sys.executable, "-m", "pully_tornado"]


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresCluster]:
    with postgres_cluster() as cluster:
        yield cluster


def pully(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PULLY, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )


async def fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await asyncio.wait_for(conn.fetch(sql), 10))
    finally:
        await conn.close()


@pytest.mark.parametrize("table", ["pully_outbox", "app.events_outbox", "_x1"])
def test_safe_table_names_accepted(table: str) -> None:
    assert check_table(table) == table


@pytest.mark.parametrize(
    "table", ["", "1abc", "Outbox", "a.b.c", "x;drop table y", "a b", "x" * 49, "a."]
)
def test_unsafe_table_names_refused(table: str) -> None:
    with pytest.raises(InvalidTable):
        check_table(table)


def test_print_shows_the_sql_without_a_database() -> None:
    result = pully("outbox", "init", "--print", "--table", "app.events")
    assert result.returncode == 0, result.stderr
    assert result.stdout == init_sql("app.events")
    assert "CREATE TABLE IF NOT EXISTS app.events (" in result.stdout
    assert "CREATE TABLE IF NOT EXISTS app.events_failed (" in result.stdout


def test_unsafe_table_is_a_usage_error() -> None:
    result = pully("outbox", "init", "--print", "--table", "x;drop")
    assert result.returncode == 2
    assert "invalid outbox table 'x;drop'" in result.stderr


def test_init_without_dsn_says_how() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PULLY_OUTBOX_DSN"}
    result = subprocess.run(
        [*PULLY, "outbox", "init"], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 2
    assert "PULLY_OUTBOX_DSN" in result.stderr


def test_init_is_idempotent_and_the_trigger_notifies(pg: PostgresCluster) -> None:
    for _ in range(2):
        result = pully("outbox", "init", "--dsn", pg.dsn)
        assert result.returncode == 0, result.stderr
        assert result.stdout == "outbox pully_outbox ready\n"

    async def scenario() -> tuple[list[asyncpg.Record], list[str]]:
        conn = await asyncpg.connect(pg.dsn, timeout=10)
        heard: asyncio.Queue[str] = asyncio.Queue(maxsize=10)
        try:
            await conn.add_listener("pully_outbox_insert", lambda *a: heard.put_nowait(a[3]))
            await conn.execute(
                "INSERT INTO pully_outbox (channel, data, partition) VALUES ($1, $2, 3)",
                "news",
                json.dumps({"n": 1}),
            )
            payload = await asyncio.wait_for(heard.get(), 10)
            rows = await conn.fetch("SELECT channel, data, partition FROM pully_outbox")
        finally:
            await conn.close()
        return list(rows), [payload]

    rows, payloads = asyncio.run(scenario())
    assert [(r["channel"], json.loads(r["data"]), r["partition"]) for r in rows] == [
        ("news", {"n": 1}, 3)
    ]
    assert payloads == ["3"]
    failed = asyncio.run(fetch(pg.dsn, "SELECT count(*) AS n FROM pully_outbox_failed"))
    assert failed[0]["n"] == 0


def test_init_reports_an_unreachable_database() -> None:
    from .support import free_port

    result = pully("outbox", "init", "--dsn", f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    assert result.returncode == 1
    assert result.stderr.startswith("pully: cannot reach the database")


def test_the_docs_sql_example_writes_one_outbox_row(pg: PostgresCluster) -> None:
    assert pully("outbox", "init", "--dsn", pg.dsn).returncode == 0
    text = (Path(__file__).parent.parent / "docs" / "consumers.md").read_text()
    sql = text.split("<!-- outbox-sql -->\n```sql\n", 1)[1].split("```", 1)[0]

    async def scenario() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(pg.dsn, timeout=10)
        try:
            await conn.execute("DELETE FROM pully_outbox")
            await asyncio.wait_for(conn.execute(sql), 10)
            return list(await conn.fetch("SELECT channel, data, idempotency_key FROM pully_outbox"))
        finally:
            await conn.close()

    rows = asyncio.run(scenario())
    assert [(r["channel"], json.loads(r["data"]), r["idempotency_key"]) for r in rows] == [
        ("orders", {"item": "tea", "order": 1}, "order-1")
    ]
