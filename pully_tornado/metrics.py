"""``GET /metrics``: Prometheus metrics of one node.

Counts on the hot path are plain integers on the node, the hub and the pipeline; a collector
turns them into metrics when Prometheus scrapes, so a delivery costs no metric call. Function
latency is a real histogram (a function call is slow next to observing it).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sized
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .broker.base import Broker
from .hub import Hub
from .listener import Listener
from .publishing import Publisher
from .relationships.manager import RelationshipsManager
from .subscriptions import Subscriptions


class Observed(Protocol):
    """What the collector reads of a node (the node itself, in practice: this module does not
    import it, so the two do not depend on each other)."""

    @property
    def connections(self) -> Sized: ...
    @property
    def hub(self) -> Hub: ...
    @property
    def broker(self) -> Broker: ...
    @property
    def listener(self) -> Listener: ...
    @property
    def relationships(self) -> RelationshipsManager: ...
    @property
    def publisher(self) -> Publisher: ...
    @property
    def subscriptions(self) -> Subscriptions: ...
    @property
    def disconnects(self) -> collections.Counter[str]: ...


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FUNCTION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class NodeCollector(Collector):
    def __init__(self, node: Observed) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        gauges = {
            "connections": ("WebSocket connections open", len(node.connections)),
            "subscriptions": (
                "Channel subscriptions of this node's clients",
                node.hub.subscriptions,
            ),
            "channels": ("Channels with local subscribers", len(node.hub)),
            "broker_channels": (
                "Channels the broker keeps state for in this process",
                node.broker.channel_count,
            ),
            "broker_connected": ("1 while the broker is reachable", int(node.broker.connected)),
            "pending_connections": (
                "Connections that have not finished a request (handshakes, idle keep-alive)",
                node.listener.pending,
            ),
            "relationships_version": (
                "Relationships version this node runs (-1: not loaded)",
                -1 if node.relationships.version is None else node.relationships.version,
            ),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(f"pully_{name}", doc, value=value)
        publishes = CounterMetricFamily(
            "pully_publishes", "Publishes handled by this node", labels=["result"]
        )
        for result, count in node.publisher.results.items():
            publishes.add_metric([result], count)
        yield publishes
        yield CounterMetricFamily(
            "pully_deliveries", "Messages written to local subscribers", value=node.hub.deliveries
        )
        disconnects = CounterMetricFamily(
            "pully_disconnects", "Connections the node closed, by reason", labels=["reason"]
        )
        for reason, count in node.disconnects.items():
            disconnects.add_metric([reason], count)
        yield disconnects
        yield CounterMetricFamily(
            "pully_broker_reconnects", "Times the broker link came back",
            value=node.broker.reconnects,
        )  # fmt: skip
        yield CounterMetricFamily(
            "pully_idempotency_keys_forgotten", "Idempotency keys forgotten before their TTL "
            "(the memory engine keeps 100,000 at most)",
            value=node.broker.idempotency_keys_forgotten,
        )  # fmt: skip
        yield CounterMetricFamily(
            "pully_gaps_filled", "Messages this node recovered from history after a gap",
            value=node.subscriptions.gaps_filled,
        )  # fmt: skip
        yield CounterMetricFamily(
            "pully_insufficient_state", "Subscriptions this node ended with reason "
            "insufficient_state: it could not vouch that they got every message",
            value=node.subscriptions.insufficient_states,
        )  # fmt: skip
        pauses = CounterMetricFamily(
            "pully_accept_pauses", "Times accepting paused as accept() failed (EMFILE: out of "
            "descriptors), by error", labels=["error"],
        )  # fmt: skip
        for error, count in node.listener.accept_pauses.items():
            pauses.add_metric([error], count)
        yield pauses
        yield CounterMetricFamily(
            "pully_handshake_timeouts", "Connections closed for not finishing a request within "
            "PULLY_HANDSHAKE_TIMEOUT", value=node.listener.timeouts,
        )  # fmt: skip
        yield CounterMetricFamily(
            "pully_connections_refused", "Connections closed on accept: PULLY_MAX_CONNECTIONS "
            "connections had not finished a request", value=node.listener.refused,
        )  # fmt: skip


class Metrics:
    """One registry per node (several nodes may share a process in tests)."""

    def __init__(self, node: Observed) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node))
        self.function_seconds = Histogram(
            "pully_function_seconds", "Channel function call time, by function and outcome",
            ["function", "outcome"], registry=self.registry, buckets=FUNCTION_BUCKETS,
        )  # fmt: skip

    def render(self) -> bytes:
        return generate_latest(self.registry)
