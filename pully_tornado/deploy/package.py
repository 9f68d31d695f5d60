"""Deterministic function packages: the same files always give the same zip, byte for byte, so
its SHA-256 (base64, as Lambda reports ``CodeSha256``) says whether the code changed.

Entries are sorted, every timestamp is 1980-01-01, every file is ``0644`` and stored without
compression: deflate output depends on the zlib build, so a compressed zip made on another
machine could differ for the same code. Lambda's 250 MB limit is on the unzipped size anyway.
``__pycache__``, ``*.pyc`` and editor/OS litter are left out.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644
SKIP_DIRS = {"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo", "~", ".swp")
SKIP_NAMES = {".DS_Store", "Thumbs.db"}


@dataclass(frozen=True)
class Package:
    """One function's zip and its hash."""

    name: str
    data: bytes

    @property
    def sha256(self) -> str:
        """Base64 SHA-256 of the zip: Lambda's ``CodeSha256`` for the same bytes."""
        return base64.b64encode(hashlib.sha256(self.data).digest()).decode()


def _files(folder: Path) -> list[tuple[str, Path]]:
    out = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part in SKIP_DIRS for part in rel.parts[:-1]) or not path.is_file():
            continue
        if path.name in SKIP_NAMES or path.name in SKIP_DIRS or path.name.endswith(SKIP_SUFFIXES):
            continue
        out.append((rel.as_posix(), path))
    return sorted(out)


def build(name: str, folder: Path) -> Package:
    """Zip every file under ``folder`` (``handler.py`` at the root of the zip)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for arcname, path in _files(folder):
            info = zipfile.ZipInfo(arcname, date_time=FIXED_TIME)
            info.external_attr = FILE_MODE << 16
            info.create_system = 3  # unix, whatever the machine
            zf.writestr(info, path.read_bytes())
    return Package(name, buf.getvalue())
