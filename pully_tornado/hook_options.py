"""The settings of the hooks into the app's backend (docs/hooks.md): their rows of the
``OPTIONS`` table (:mod:`pully_tornado.settings` appends them) and their parsers."""

from __future__ import annotations

from urllib.parse import urlsplit

from . import config_values as values
from .config_values import Option
from .errors import ConfigError


def http_url(raw: str) -> str | None:
    """An ``http://`` or ``https://`` URL with a host (a hook's receiver), or None (unset)."""
    if not raw:
        return None
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("has an invalid port") from None
    return raw


WEBHOOK_EVENTS = (
    "connect", "disconnect", "subscribe", "unsubscribe", "channel_occupied", "channel_vacated",
)  # fmt: skip


def webhook_events(raw: str) -> frozenset[str]:
    """A comma-separated subset of :data:`WEBHOOK_EVENTS` (empty: none)."""
    found = frozenset(e.strip() for e in raw.split(",") if e.strip())
    unknown = sorted(found - set(WEBHOOK_EVENTS))
    if unknown:
        raise ValueError(
            f"holds unknown events {', '.join(unknown)}: use {', '.join(WEBHOOK_EVENTS)}"
        )
    return found


def webhook_secret(raw: str) -> str | None:
    if raw and len(raw.encode()) < 16:
        raise ValueError("must be at least 16 bytes")
    return raw or None


HOOK_OPTIONS: tuple[Option, ...] = (
    Option(
        "connect_proxy_url",
        "PULLY_CONNECT_PROXY_URL",
        http_url,
        "",
        "URL asked to admit handshakes without a JWT (cookie sessions): docs/hooks.md.",
    ),
    Option(
        "subscribe_proxy_url",
        "PULLY_SUBSCRIBE_PROXY_URL",
        http_url,
        "",
        "URL asked before a client subscribes to a PULLY_SUBSCRIBE_PROXY_CHANNELS channel.",
    ),
    Option(
        "subscribe_proxy_channels",
        "PULLY_SUBSCRIBE_PROXY_CHANNELS",
        values.globs(values.channel_glob_problem),
        "*",
        "Comma-separated channel globs whose subscribes go to PULLY_SUBSCRIBE_PROXY_URL.",
    ),
    Option(
        "proxy_timeout",
        "PULLY_PROXY_TIMEOUT",
        values.number(0.1),
        "2",
        "Seconds a connect or subscribe proxy has to answer (then 503 / unavailable).",
    ),
    Option(
        "webhook_url",
        "PULLY_WEBHOOK_URL",
        http_url,
        "",
        "URL that receives batches of events (needs PULLY_WEBHOOK_SECRET): docs/hooks.md.",
    ),
    Option(
        "webhook_events",
        "PULLY_WEBHOOK_EVENTS",
        webhook_events,
        ",".join(WEBHOOK_EVENTS),
        "Comma-separated events sent to PULLY_WEBHOOK_URL: connect, disconnect, subscribe, "
        "unsubscribe, channel_occupied, channel_vacated.",
    ),
    Option(
        "webhook_secret",
        "PULLY_WEBHOOK_SECRET",
        webhook_secret,
        "",
        "Key of the X-Pully-Signature HMAC-SHA256 of each webhook body (at least 16 bytes).",
    ),
    Option(
        "webhook_queue",
        "PULLY_WEBHOOK_QUEUE",
        values.integer(1),
        "10000",
        "Webhook events held while the receiver is slow or down; past it events are dropped "
        'and counted (pully_webhook_events{result="overflow"}).',
    ),
)


def check_hook_settings(webhook_url: str | None, webhook_secret: str | None) -> None:
    """Refuse a webhook URL without a secret: a receiver could not tell our events from
    anyone's. Raises ``ConfigError``."""
    if webhook_url and not webhook_secret:
        raise ConfigError(
            "PULLY_WEBHOOK_SECRET",
            "is required with PULLY_WEBHOOK_URL (receivers verify each body's "
            "X-Pully-Signature with it)",
        )
