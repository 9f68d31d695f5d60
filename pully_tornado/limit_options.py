"""The per-connection rate and subscription limits' rows of the ``OPTIONS`` table
(:mod:`pully_tornado.settings` places them; docs/reliability.md, "Limits")."""

from __future__ import annotations

from . import config_values as values
from .config_values import Option

LIMIT_OPTIONS: tuple[Option, ...] = (
    Option(
        "publish_rate",
        "PULLY_PUBLISH_RATE",
        values.number(0),
        "100",
        "Publishes per second allowed per connection (0: unlimited).",
    ),
    Option(
        "publish_burst",
        "PULLY_PUBLISH_BURST",
        values.integer(1),
        "200",
        "Publishes a connection may send at once above the rate; this many refused in a "
        "row close it (4029).",
    ),
    Option(
        "subscribe_rate",
        "PULLY_SUBSCRIBE_RATE",
        values.number(0),
        "50",
        "Subscribes plus unsubscribes per second allowed per connection (0: unlimited).",
    ),
    Option(
        "subscribe_burst",
        "PULLY_SUBSCRIBE_BURST",
        values.integer(1),
        "1000",
        "Subscribes a connection may send at once above the rate (a reconnecting client "
        "resubscribes everything at once); this many refused in a row close it (4029).",
    ),
    Option(
        "max_subscriptions",
        "PULLY_MAX_SUBSCRIPTIONS",
        values.integer(1),
        "1000",
        "Channels one connection may subscribe to.",
    ),
)
