"""The database: one engine per process, a session per request."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker


def engine_url(url: str) -> str:
    """``postgresql://...`` as SQLAlchemy's psycopg 3 dialect names it."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"DATABASE_URL must be a postgresql:// URL, not {url[:30]!r}")


class Database:
    def __init__(self, url: str) -> None:
        self.engine = create_engine(engine_url(url), pool_pre_ping=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def session(self) -> Iterator[Session]:
        with self._sessions() as session:
            yield session
