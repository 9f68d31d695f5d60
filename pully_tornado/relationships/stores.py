"""``create_store``: the relationships store ``PULLY_STORE`` names, imported only when used.

Beside the interface (:mod:`.store`) rather than in it, so the implementations import the
interface and nothing imports back."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from ..settings import Settings
from .store import Store

logger = logging.getLogger("pully.relationships")


def create_store(settings: Settings, broker: object = None) -> Store:
    """``PULLY_STORE`` (:attr:`Settings.store_url`): ``file://PATH``, ``s3://BUCKET/KEY``,
    ``redis`` (the cluster's Redis: through ``broker``'s links when it is a Redis broker) or a
    ``redis://`` URL; boto3 is imported only when used."""
    url = settings.store_url
    parts = urlsplit(url)
    if parts.scheme == "s3":
        from .s3 import S3Store

        return S3Store(parts.netloc, parts.path.lstrip("/") or "relationships.json", settings)
    if url == "redis" or parts.scheme in ("redis", "rediss", "unix"):
        from .redis import RedisStore

        redis_url = settings.redis_url if url == "redis" else url
        assert redis_url, "Settings refuses PULLY_STORE=redis without PULLY_REDIS_URL"
        commands_for = getattr(broker, "commands_for", None) if url == "redis" else None
        return RedisStore(redis_url, commands_for)
    from .file import FileStore

    if settings.mode == "cluster":
        logger.warning(
            "PULLY_STORE=%s is a file on this machine, but this node runs in cluster mode: "
            "nodes with their own files run different documents under the same version. Use "
            "PULLY_STORE=redis (the cluster default when PULLY_STORE is unset) or s3://; "
            '/healthz reports "split": true when nodes disagree',
            url,
        )
    return FileStore(parts.netloc + parts.path)
