"""create_broker picks the broker by PULLY_REDIS_URL's scheme and names the variable otherwise."""

from __future__ import annotations

import pytest

from pully_tornado.broker import create_broker
from pully_tornado.broker.memory import MemoryBroker
from pully_tornado.broker.redis import RedisBroker
from pully_tornado.errors import ConfigError
from pully_tornado.settings import Settings


def test_no_url_is_the_memory_broker() -> None:
    assert isinstance(create_broker(Settings(redis_url=None)), MemoryBroker)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://cache.example:6380", "unix:///tmp/redis.sock"]
)
def test_redis_schemes_are_the_redis_broker(url: str) -> None:
    assert isinstance(create_broker(Settings(redis_url=url)), RedisBroker)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+cluster://h:7000", "uses redis+cluster://, not supported yet"),
        ("redis+sentinel://h:26379/mymaster", "uses redis+sentinel://, not supported yet"),
        ("memcached://h:11211", "must be a redis://, rediss:// or unix:// URL"),
    ],
)
def test_other_schemes_name_the_variable(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_broker(Settings(redis_url=url))  # typed settings skip load()'s parsing
    assert info.value.source == "PULLY_REDIS_URL"
    assert str(info.value).startswith(f"invalid PULLY_REDIS_URL: {url!r} {says}")
