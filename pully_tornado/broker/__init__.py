"""Brokers, chosen by URL scheme; each backend is imported only when used."""

from __future__ import annotations

from ..settings import Settings
from .base import Broker, BrokerEvents, Position

__all__ = ["Broker", "BrokerEvents", "Position", "create_broker"]


def create_broker(settings: Settings) -> Broker:
    """The memory broker without ``redis_url``; the Redis broker for redis://, rediss://, unix://."""
    if not settings.redis_url:
        from .memory import MemoryBroker

        return MemoryBroker(settings)
    from .redis import RedisBroker

    return RedisBroker(settings)
