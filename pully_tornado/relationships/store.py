"""Where the relationships document lives: the interface (``stores.create_store`` picks an
implementation by ``PULLY_STORE``'s scheme).

Every node of a cluster must read the same store: a file is per machine, so in cluster mode
the default is the cluster's Redis (``redis``), and a ``file://`` store set there by hand is
logged loudly at start (``/healthz`` then reports nodes that disagree: see :mod:`.manager`)."""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass
from typing import Any

from .schema import Relationships

logger = logging.getLogger("pully.relationships")


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
    async def save(self, relationships: Relationships, above: int = 0) -> int:
        """Store ``relationships`` as a new version, higher than any before and than ``above``
        (the version the saving node runs, which a store that lost its data would otherwise
        hand out again); returns it. Concurrent saves (from several nodes) each get their own
        version."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Where, for ``/healthz`` and logs (no secrets)."""

    async def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release connections. Idempotent."""
