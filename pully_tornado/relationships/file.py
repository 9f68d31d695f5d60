"""Relationships in a local file (embedded mode): the plain, human-readable document, written
atomically (temporary file, fsync, rename), with its version in a sidecar ``<file>.version``.
Saves hold an exclusive ``flock`` on ``<file>.lock``, so concurrent writers (several processes
on one file) each get their own version."""

from __future__ import annotations

import asyncio
import fcntl
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import Unavailable
from .schema import InvalidRelationships, Relationships, dumps, loads
from .store import Store, Stored


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FileStore(Store):
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.version_path = self.path.with_name(self.path.name + ".version")
        self._lock = asyncio.Lock()

    def describe(self) -> dict[str, Any]:
        return {"kind": "file", "path": str(self.path)}

    def _read_version(self) -> int:
        try:
            return int(self.version_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 1 if self.path.exists() else 0  # a hand-written file with no sidecar yet
        except ValueError:
            raise Unavailable(f"{self.version_path} does not hold a version number") from None

    def _load(self) -> Stored | None:
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return Stored(loads(text), self._read_version())
        except InvalidRelationships as exc:
            problems = "; ".join(exc.problems[:5])
            raise Unavailable(
                f"{self.path} is not a valid relationships document: {problems}"
            ) from None

    async def load(self) -> Stored | None:
        try:
            return await asyncio.to_thread(self._load)
        except OSError as exc:
            raise Unavailable(f"cannot read {self.path}: {exc.strerror or exc}") from None

    async def version(self) -> int:
        try:
            return await asyncio.to_thread(self._read_version)
        except OSError as exc:
            raise Unavailable(f"cannot read {self.version_path}: {exc.strerror or exc}") from None

    def _save(self, relationships: Relationships, above: int) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:  # serializes saves across processes, not just tasks
            fcntl.flock(lock, fcntl.LOCK_EX)
            version = max(self._read_version(), above) + 1
            _write_atomically(self.path, dumps(relationships))
            _write_atomically(self.version_path, f"{version}\n".encode())
            return version

    async def save(self, relationships: Relationships, above: int = 0) -> int:
        async with self._lock:
            try:
                return await asyncio.to_thread(self._save, relationships, above)
            except OSError as exc:
                raise Unavailable(f"cannot write {self.path}: {exc.strerror or exc}") from None
