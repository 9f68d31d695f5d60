"""Hooks into the app's backend (docs/hooks.md): the connect proxy, the subscribe proxy and
webhooks, each built only when its URL is set. :class:`Hooks` is what the node and the
subscriptions call; every call is cheap and synchronous except the two proxies, which a client
waits for by design. Nothing here is on the delivery path of a message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from ..broker import Broker
from ..settings import Settings
from .connect import ConnectProxy
from .occupancy import Ledger, MemoryLedger, Occupancy, RedisLedger, ScriptRunner
from .subscribe import SubscribeProxy
from .webhooks import Webhooks

__all__ = ["Hooks"]

logger = logging.getLogger("pully.hooks")
_OCCUPANCY_EVENTS = frozenset({"channel_occupied", "channel_vacated"})


class Hooks:
    def __init__(self, settings: Settings, broker: Broker) -> None:
        timeout = settings.proxy_timeout
        self.connect_proxy = (
            ConnectProxy(settings.connect_proxy_url, timeout)
            if settings.connect_proxy_url else None
        )  # fmt: skip
        self.subscribe_proxy = (
            SubscribeProxy(settings.subscribe_proxy_url, settings.subscribe_proxy_channels, timeout)
            if settings.subscribe_proxy_url else None
        )  # fmt: skip
        self.webhooks: Webhooks | None = None
        self.occupancy: Occupancy | None = None
        events = settings.webhook_events
        if settings.webhook_url and events:
            assert settings.webhook_secret  # Settings refuses a webhook URL without one
            self.webhooks = Webhooks(
                settings.webhook_url, settings.webhook_secret, events, settings.node_id,
                settings.webhook_queue,
            )  # fmt: skip
            if events & _OCCUPANCY_EVENTS:
                ledger: Ledger = MemoryLedger()  # one process: local is cluster-wide
                if isinstance(broker, ScriptRunner):  # the Redis engines
                    ledger = RedisLedger(broker, settings.node_id, settings.presence_ttl)
                self.occupancy = Occupancy(
                    ledger, settings.node_id, settings.presence_ttl, self._occupancy_event
                )
        # what the subscriptions must report (checked before any work on their path)
        self.tracks_subscriptions = bool(
            (self.webhooks and events & {"subscribe", "unsubscribe"}) or self.occupancy
        )

    async def start(self) -> None:
        if self.webhooks is not None:
            self.webhooks.start()
        if self.occupancy is not None:
            await self.occupancy.start()

    async def close(self, grace: float = 2.0) -> None:
        """After the connections are gone: their last events go out, for ``grace`` seconds."""
        if self.occupancy is not None:
            await self.occupancy.close(grace)
        if self.webhooks is not None:
            await self.webhooks.close(grace)
        for proxy in (self.connect_proxy, self.subscribe_proxy):
            if proxy is not None:
                proxy.close()

    # -- proxies -------------------------------------------------------------------------------

    async def authorize_subscribe(self, client: str, user: str | None, channel: str) -> None:
        """Ask the subscribe proxy when ``channel`` is one of its; raises ``Forbidden`` or
        ``Unavailable``."""
        proxy = self.subscribe_proxy
        if proxy is not None and proxy.applies(channel):
            await proxy.authorize(client, user, channel)

    # -- events ----------------------------------------------------------------------------------

    def connected(self, client: str, user: str | None) -> None:
        if self.webhooks is not None:
            self.webhooks.emit("connect", client=client, user=user)

    def disconnected(self, client: str, user: str | None, reason: str | None) -> None:
        if self.webhooks is not None:
            self.webhooks.emit("disconnect", client=client, user=user, reason=reason)

    def subscribed(self, client: str, user: str | None, channel: str, first: bool) -> None:
        """A subscription became live; ``first``: the channel's first live one on this node."""
        if self.webhooks is not None:
            self.webhooks.emit("subscribe", client=client, user=user, channel=channel)
        if first and self.occupancy is not None:
            self.occupancy.set(channel, True)

    def unsubscribed(self, client: str, user: str | None, channel: str, reason: str) -> None:
        if self.webhooks is not None:
            self.webhooks.emit(
                "unsubscribe", client=client, user=user, channel=channel, reason=reason
            )

    def channel_gone(self, channel: str) -> None:
        """No local connection is subscribed (or subscribing) to ``channel`` any more."""
        if self.occupancy is not None:
            self.occupancy.set(channel, False)

    def _occupancy_event(self, kind: str, channel: str) -> None:
        if self.webhooks is not None:
            self.webhooks.emit(kind, channel=channel)

    def collector(self) -> Collector:
        return _HooksCollector(self)


class _HooksCollector(Collector):
    def __init__(self, hooks: Hooks) -> None:
        self._hooks = hooks

    def collect(self) -> Iterator[Any]:
        hooks = self._hooks
        if hooks.webhooks is not None:
            family = CounterMetricFamily(
                "pully_webhook_events", "Webhook events by outcome: queued, sent, overflow "
                "(dropped: the queue was full), failed (dropped after the retries)",
                labels=["result"],
            )  # fmt: skip
            for result in ("queued", "sent", "overflow", "failed"):
                family.add_metric([result], hooks.webhooks.counts[result])
            yield family
        for name, proxy in (("connect", hooks.connect_proxy), ("subscribe", hooks.subscribe_proxy)):
            if proxy is not None:
                family = CounterMetricFamily(
                    f"pully_{name}_proxy", f"{name.capitalize()} proxy answers by result",
                    labels=["result"],
                )  # fmt: skip
                for result, count in proxy.results.items():
                    family.add_metric([result], count)
                yield family
