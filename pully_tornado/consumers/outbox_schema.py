"""The PostgreSQL outbox table, its dead-letter table and the NOTIFY trigger, as SQL.

The statements are idempotent (``IF NOT EXISTS``, ``CREATE OR REPLACE``), so running them
again on an initialised database changes nothing.
"""

from __future__ import annotations

import re

DEFAULT_TABLE = "pully_outbox"

_IDENT = r"[a-z_][a-z0-9_]{0,47}"
_TABLE = re.compile(rf"(?:{_IDENT}\.)?{_IDENT}")


class InvalidTable(ValueError):
    """The table name is not a plain (optionally schema-qualified) lower-case SQL identifier."""


def check_table(table: str) -> str:
    """Return ``table`` when it is a safe identifier such as ``pully_outbox`` or
    ``app.pully_outbox``; raise :class:`InvalidTable` otherwise."""
    if not _TABLE.fullmatch(table):
        raise InvalidTable(
            f"invalid outbox table {table!r}: expected [schema.]name, lower-case letters, "
            "digits and underscores, not starting with a digit, at most 48 characters each"
        )
    return table


def _bare(table: str) -> str:
    return table.rsplit(".", 1)[-1]


def notify_channel(table: str) -> str:
    """The ``LISTEN``/``NOTIFY`` channel the trigger signals on."""
    return f"{_bare(check_table(table))}_insert"


def init_sql(table: str = DEFAULT_TABLE) -> str:
    """The SQL that creates the outbox ``table``, ``<table>_failed`` and the NOTIFY trigger."""
    check_table(table)
    bare = _bare(table)
    schema = table[: -len(bare)]
    return f"""\
CREATE TABLE IF NOT EXISTS {table} (
    id bigserial PRIMARY KEY,
    channel text NOT NULL,
    data jsonb NOT NULL,
    idempotency_key text,
    partition int NOT NULL DEFAULT 0,
    created_at timestamptz DEFAULT now()
);
CREATE INDEX IF NOT EXISTS {bare}_partition_id ON {table} (partition, id);
CREATE TABLE IF NOT EXISTS {table}_failed (
    id bigint PRIMARY KEY,
    channel text NOT NULL,
    data jsonb NOT NULL,
    idempotency_key text,
    partition int NOT NULL,
    created_at timestamptz,
    failed_at timestamptz NOT NULL DEFAULT now(),
    error text NOT NULL
);
CREATE OR REPLACE FUNCTION {schema}{bare}_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{bare}_insert', NEW.partition::text);
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS {bare}_notify ON {table};
CREATE TRIGGER {bare}_notify AFTER INSERT ON {table}
    FOR EACH ROW EXECUTE FUNCTION {schema}{bare}_notify();
"""


async def init(dsn: str, table: str = DEFAULT_TABLE) -> None:
    """Run :func:`init_sql` on the database at ``dsn`` in one transaction."""
    import asyncpg  # type: ignore[import-untyped]  # optional: the [postgres] extra

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        async with conn.transaction():
            await conn.execute(init_sql(table))
    finally:
        await conn.close()
