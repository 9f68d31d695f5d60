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
    """``PULLY_REDIS_URL`` parsed; :class:`ConfigError` naming the variable when it is not a
    URL a broker serves (redis+cluster:// and redis+sentinel:// are parsed but not served yet)."""
    assert settings.redis_url
    problem = redis_url_problem(settings.redis_url)
    if problem is not None:
        raise ConfigError("PULLY_REDIS_URL", f"{settings.redis_url!r} {problem}")
    return parse_redis_url(settings.redis_url)


def create_broker(settings: Settings) -> Broker:
    """The broker ``settings.redis_url`` names by its scheme: the in-process memory broker
    when it is unset, the Redis broker for redis://, rediss:// and unix://. Raises
    :class:`ConfigError` naming ``PULLY_REDIS_URL`` for any other scheme (redis+cluster:// and
    redis+sentinel:// are planned, not supported yet)."""
    if not settings.redis_url:
        from .memory import MemoryBroker

        return MemoryBroker(settings)
    target = redis_target(settings)
    from .redis import RedisBroker

    return RedisBroker(settings, target)
