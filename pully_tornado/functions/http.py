"""The ``http`` runtime: POST the event as JSON to the function's ``url``; the reply body is the
result (``null``, or ``204 No Content``, drops the message). Non-2xx replies, timeouts and
bodies that are not JSON fail the call."""

from __future__ import annotations

from typing import Any

import orjson
import tornado.httpclient

# The default AsyncHTTPClient (not configured otherwise anywhere) is simple_httpclient, which
# raises this subclass of HTTPClientError for both connect and request timeouts.
from tornado.simple_httpclient import HTTPTimeoutError

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
        except HTTPTimeoutError:  # connect_timeout or request_timeout passed (code 599)
            raise FunctionError(f"timed out after {spec.timeout:g}s ({spec.url})") from None
        except tornado.httpclient.HTTPClientError as exc:  # other 599s: resets, closed streams
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
