"""The ``http`` runtime: POST the event as JSON to the function's ``url``; the reply body is the
result (``null``, or ``204 No Content``, drops the message). Non-2xx replies, timeouts and
bodies that are not JSON fail the call."""

from __future__ import annotations

from typing import Any

import orjson
import tornado.httpclient

from ..relationships import FunctionSpec
from .base import FunctionError, Runtime


class HttpRuntime(Runtime):
    kind = "http"

    async def call(self, name: str, spec: FunctionSpec, event: dict[str, Any]) -> Any:
        assert spec.url is not None  # the schema requires it for runtime http
        request = tornado.httpclient.HTTPRequest(
            spec.url, method="POST", body=orjson.dumps(event),
            headers={"Content-Type": "application/json", "X-Pully-Function": name},
            connect_timeout=min(2.0, spec.timeout), request_timeout=spec.timeout,
            follow_redirects=False,
        )  # fmt: skip
        client = tornado.httpclient.AsyncHTTPClient()
        try:
            response = await client.fetch(request, raise_error=False)
        except tornado.httpclient.HTTPClientError as exc:  # 599: timeouts, resets
            if "Timeout" in type(exc).__name__ or "Timeout" in str(exc):
                raise FunctionError(f"timed out after {spec.timeout:g}s ({spec.url})") from None
            raise FunctionError(f"{spec.url} unreachable: {exc}") from None
        except OSError as exc:
            raise FunctionError(f"{spec.url} unreachable: {exc}") from None
        if response.code == 204:
            return None
        if not 200 <= response.code < 300:
            raise FunctionError(f"{spec.url} answered HTTP {response.code}")
        try:
            return orjson.loads(response.body)
        except orjson.JSONDecodeError:
            raise FunctionError(f"{spec.url} answered a body that is not JSON") from None
