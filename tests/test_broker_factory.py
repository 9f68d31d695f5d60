"""create_broker picks the broker by PULLY_REDIS_URL's scheme and names the variable otherwise."""

from __future__ import annotations

import pytest

from pully_tornado.broker import create_broker
from pully_tornado.broker.memory import MemoryBroker
from pully_tornado.broker.redis import RedisBroker
from pully_tornado.broker.redis_cluster import RedisClusterBroker
from pully_tornado.broker.redis_sentinel import RedisSentinelBroker
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
    ("url", "kind"),
    [
        ("redis+cluster://h1:7000,h2:7001", RedisClusterBroker),
        ("rediss+cluster://cache.example:6379", RedisClusterBroker),
        ("redis+sentinel://s1:26379,s2:26379/mymaster", RedisSentinelBroker),
        ("rediss+sentinel://s1/mymaster/2", RedisSentinelBroker),
    ],
)
def test_cluster_and_sentinel_schemes_have_their_engines(url: str, kind: type) -> None:
    broker = create_broker(Settings(redis_url=url))
    assert type(broker) is kind


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://h:26379", "must name the master"),
        ("redis+cluster://h:7000/3", "names a database: a Redis Cluster has only database 0"),
        ("memcached://h:11211", "must be a redis://HOST:PORT/DB, redis+cluster://"),
    ],
)
def test_other_schemes_name_the_variable(url: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        create_broker(Settings(redis_url=url))  # typed settings skip load()'s parsing
    assert info.value.source == "PULLY_REDIS_URL"
    assert str(info.value).startswith(f"invalid PULLY_REDIS_URL: {url!r} {says}")
