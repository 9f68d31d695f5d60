"""Where the relationships document lives: one interface, chosen by ``PULLY_STORE``'s scheme."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..settings import Settings
from .schema import Relationships


@dataclass(frozen=True, slots=True)
class Stored:
    """A document and its version: versions only ever grow (0: nothing stored yet)."""

    relationships: Relationships
    version: int


class Store(abc.ABC):
    """Interface of a relationships store. Methods raise
    :class:`~pully_tornado.errors.Unavailable` when the store cannot be reached; nothing is
    changed then."""

    @abc.abstractmethod
    async def load(self) -> Stored | None:
        """The current document, or None when none was ever saved."""

    @abc.abstractmethod
    async def version(self) -> int:
        """The current version, cheaply (0 when none was saved)."""

    @abc.abstractmethod
    async def save(self, relationships: Relationships) -> int:
        """Store ``relationships`` as a new version, higher than any before; returns it.
        Concurrent saves (from several nodes) each get their own version."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Where, for ``/healthz`` and logs (no secrets)."""


def create_store(settings: Settings) -> Store:
    """``file://PATH`` or ``s3://BUCKET/KEY``; the S3 backend (boto3) is imported only when used."""
    parts = urlsplit(settings.store)
    if parts.scheme == "s3":
        from .s3 import S3Store

        return S3Store(parts.netloc, parts.path.lstrip("/") or "relationships.json", settings)
    from .file import FileStore

    return FileStore(parts.netloc + parts.path)
