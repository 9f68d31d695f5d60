"""A small HTTP server that speaks AWS Lambda's Invoke REST call, for testing the ``lambda``
runtime through real boto3 over HTTP (moto cannot run function code without Docker).

``POST /2015-03-31/functions/{name}/invocations`` runs the Python handler registered under
``name`` with the JSON payload. Like Lambda: an exception becomes a 200 with
``X-Amz-Function-Error: Unhandled`` and ``{"errorMessage", "errorType"}``; an unknown function
is a 404 ``ResourceNotFoundException``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import tornado.httpserver
import tornado.netutil
import tornado.web

Handler = Callable[[Any, Any], Any]


class _Invoke(tornado.web.RequestHandler):
    def initialize(self, server: LambdaServer) -> None:
        self.server = server

    async def post(self, name: str) -> None:
        self.server.calls.append(name)
        handler = self.server.functions.get(name)
        self.set_header("Content-Type", "application/json")
        if handler is None:
            self.set_status(404)
            self.set_header("x-amzn-ErrorType", "ResourceNotFoundException")
            self.finish(orjson.dumps({"Type": "User", "message": f"Function not found: {name}"}))
            return
        delay = self.server.delays.get(name, 0.0)
        if delay:
            await asyncio.sleep(delay)
        try:
            result = handler(orjson.loads(self.request.body), None)
            self.finish(orjson.dumps(result))
        except Exception as exc:
            self.set_header("X-Amz-Function-Error", "Unhandled")
            self.finish(orjson.dumps({"errorMessage": str(exc), "errorType": type(exc).__name__}))


class LambdaServer:
    """Register functions in ``functions`` (and optional ``delays``), then point boto3's
    ``endpoint_url`` (``PULLY_AWS_ENDPOINT_URL``) at :attr:`url`."""

    def __init__(self) -> None:
        self.functions: dict[str, Handler] = {}
        self.delays: dict[str, float] = {}
        self.calls: list[str] = []
        app = tornado.web.Application(
            [(r"/2015-03-31/functions/([^/]+)/invocations", _Invoke, {"server": self})]
        )
        self._server = tornado.httpserver.HTTPServer(app)
        [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self._server.add_sockets([sock])
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def close(self) -> None:
        self._server.stop()
        await self._server.close_all_connections()
