"""Brokers, chosen by URL scheme; each backend is imported only when used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import Broker, BrokerEvents, Position
from .redis_url import RedisTarget, parse_redis_url, redis_url_problem

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["Broker", "BrokerEvents", "Position", "create_broker", "redis_target"]


def redis_target(settings: Settings) -> RedisTarget:
    """``PULLY_REDIS_URL`` parsed, with ``PULLY_REDIS_TLS_CA`` and
    ``PULLY_REDIS_TLS_SKIP_VERIFY``; :class:`ConfigError` naming the variable when it is not a
    URL a broker serves."""
    assert settings.redis_url
    problem = redis_url_problem(settings.redis_url)
    if problem is not None:
        raise ConfigError("PULLY_REDIS_URL", f"{settings.redis_url!r} {problem}")
    return parse_redis_url(
        settings.redis_url, settings.redis_tls_ca, not settings.redis_tls_skip_verify
    )


def create_broker(settings: Settings) -> Broker:
    """The broker ``settings.redis_url`` names by its scheme: the in-process memory broker
    when it is unset; for redis://, rediss:// and unix:// one Redis, for redis+cluster:// a
    Redis Cluster, for redis+sentinel:// the master Sentinel names. Raises
    :class:`ConfigError` naming ``PULLY_REDIS_URL`` for any other scheme."""
    if not settings.redis_url:
        from .memory import MemoryBroker

        return MemoryBroker(settings)
    target = redis_target(settings)
    if target.topology == "cluster":
        from .redis_cluster import RedisClusterBroker

        return RedisClusterBroker(settings, target)
    if target.topology == "sentinel":
        from .redis_sentinel import RedisSentinelBroker

        return RedisSentinelBroker(settings, target)
    from .redis import RedisBroker

    return RedisBroker(settings, target)
