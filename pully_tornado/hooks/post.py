"""One POST to the app's backend: JSON in, status and JSON out, bounded by a timeout.

Every hook (connect proxy, subscribe proxy, webhooks) talks to the backend through this, each
with an HTTP client of its own (``force_instance``), so a hung webhook receiver never takes the
connection slots the proxies need to admit clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

USER_AGENT = "pully-hooks"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the backend answered: ``status`` 599 when there was no answer (timeout, refused
    connection, DNS), with ``problem`` saying which."""

    status: int
    body: bytes
    problem: str = ""

    def json(self) -> Any:
        """The body as JSON; raises ``ValueError`` when it is not."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"the body is not JSON: {exc}") from None


class Poster:
    """POSTs JSON to one URL. ``max_clients``: requests in flight at once (more wait, within
    their timeout)."""

    def __init__(self, url: str, timeout: float, max_clients: int) -> None:
        self.url = url
        self.timeout = timeout
        self._http = AsyncHTTPClient(force_instance=True, max_clients=max_clients)

    async def post(self, body: bytes, headers: dict[str, str] | None = None) -> Answer:
        request = HTTPRequest(
            self.url, method="POST", body=body, connect_timeout=self.timeout,
            request_timeout=self.timeout, follow_redirects=False, user_agent=USER_AGENT,
            headers={"Content-Type": "application/json", **(headers or {})},
        )  # fmt: skip
        try:  # raise_error=False still raises for no answer (timeouts, refused connections)
            response = await self._http.fetch(request, raise_error=False)
        except (HTTPClientError, OSError) as exc:
            return Answer(599, b"", str(exc) or type(exc).__name__)
        if response.code == 599:
            return Answer(599, b"", str(response.error or "no answer"))
        return Answer(response.code, response.body or b"")

    def close(self) -> None:
        self._http.close()
