"""The subscribe proxy (``PULLY_SUBSCRIBE_PROXY_URL``): the app's backend decides each client
subscribe to a channel matching ``PULLY_SUBSCRIBE_PROXY_CHANNELS``, after the token's rights.

The node POSTs ``{client, user, channel}``; 200 allows, 403 is ``forbidden``, anything else or
no answer within ``PULLY_PROXY_TIMEOUT`` is ``unavailable`` (the client may retry). Server-side
subscriptions are not asked about: the server decided those.
"""

from __future__ import annotations

import fnmatch
import logging

import orjson

from ..errors import Forbidden, Unavailable
from .post import Poster

logger = logging.getLogger("pully.hooks")


class SubscribeProxy:
    def __init__(self, url: str, globs: tuple[str, ...], timeout: float) -> None:
        self._poster = Poster(url, timeout, max_clients=100)
        self._globs = globs
        self.results: dict[str, int] = {}  # allowed, refused, failed: for /metrics

    def applies(self, channel: str) -> bool:
        return any(fnmatch.fnmatchcase(channel, g) for g in self._globs)

    async def authorize(self, client: str, user: str | None, channel: str) -> None:
        """Return when the backend allows it; raises ``Forbidden`` or ``Unavailable``."""
        body = orjson.dumps({"client": client, "user": user, "channel": channel})
        answer = await self._poster.post(body)
        result = {200: "allowed", 403: "refused"}.get(answer.status, "failed")
        self.results[result] = self.results.get(result, 0) + 1
        if result == "refused":
            raise Forbidden(f"the subscribe proxy refused {channel!r}")
        if result == "failed":
            why = answer.problem or f"HTTP {answer.status}"
            logger.warning("subscribe proxy %s: %s (channel %s)", self._poster.url, why, channel)
            raise Unavailable(f"the subscribe proxy did not answer for {channel!r}: {why}")

    def close(self) -> None:
        self._poster.close()
