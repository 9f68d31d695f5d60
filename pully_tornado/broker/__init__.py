"""Brokers, chosen by URL scheme; each backend is imported only when used."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from ..config_values import REDIS_SCHEMES, redis_scheme_problem
from ..errors import ConfigError
from ..settings import Settings
from .base import Broker, BrokerEvents, Position

__all__ = ["Broker", "BrokerEvents", "Position", "create_broker"]


def _memory(settings: Settings) -> Broker:
    from .memory import MemoryBroker

    return MemoryBroker(settings)


def _redis(settings: Settings) -> Broker:
    from .redis import RedisBroker

    return RedisBroker(settings)


_BY_SCHEME: dict[str, Callable[[Settings], Broker]] = dict.fromkeys(REDIS_SCHEMES, _redis)


def create_broker(settings: Settings) -> Broker:
    """The broker ``settings.redis_url`` names by its scheme: the in-process memory broker
    when it is unset, the Redis broker for redis://, rediss:// and unix://. Raises
    :class:`ConfigError` naming ``PULLY_REDIS_URL`` for any other scheme (redis+cluster:// and
    redis+sentinel:// are planned, not supported yet)."""
    if not settings.redis_url:
        return _memory(settings)
    scheme = urlsplit(settings.redis_url).scheme
    factory = _BY_SCHEME.get(scheme)
    if factory is None:
        problem = redis_scheme_problem(scheme) or "has no broker"
        raise ConfigError("PULLY_REDIS_URL", f"{settings.redis_url!r} {problem}")
    return factory(settings)
