"""``pully outbox init [--print]``: create the PostgreSQL outbox table and its trigger."""

from __future__ import annotations

import asyncio

import click

from ..consumers.outbox_schema import DEFAULT_TABLE, InvalidTable, check_table, init, init_sql
from .common import PullyGroup, fail, one_line


@click.group("outbox", cls=PullyGroup, short_help="Set up the PostgreSQL outbox.")
def outbox() -> None:
    """The transactional outbox: rows the app writes with its data, published by the nodes."""


@outbox.command("init")
@click.option("--dsn", envvar="PULLY_OUTBOX_DSN", help="PostgreSQL DSN. [env PULLY_OUTBOX_DSN]")
@click.option(
    "--table",
    envvar="PULLY_OUTBOX_TABLE",
    default=DEFAULT_TABLE,
    show_default=True,
    help="Outbox table, optionally schema-qualified. [env PULLY_OUTBOX_TABLE]",
)
@click.option("--print", "print_only", is_flag=True, help="Print the SQL instead of running it.")
def init_command(dsn: str | None, table: str, print_only: bool) -> None:
    """Create the outbox table, <table>_failed and the NOTIFY trigger (safe to run again)."""
    try:
        check_table(table)
    except InvalidTable as exc:
        fail(str(exc), 2)
    if print_only:
        click.echo(init_sql(table), nl=False)
        return
    if not dsn:
        fail("no database: pass --dsn or set PULLY_OUTBOX_DSN (or use --print)", 2)
    try:
        asyncio.run(init(dsn, table))
    except ImportError:
        fail("pully outbox init needs asyncpg: pip install 'pully-tornado[postgres]'")
    except (TimeoutError, OSError) as exc:
        fail(f"cannot reach the database: {one_line(exc)}")
    except Exception as exc:  # asyncpg's PostgresError and friends
        fail(f"outbox init failed: {type(exc).__name__}: {exc}")
    click.echo(f"outbox {table} ready")
