"""A real HTTP server standing in for the app's backend in hook tests: it records every request
and answers each path as the test says (a status and a JSON body, or a hang)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
import tornado.httpserver
import tornado.netutil
import tornado.web

HANG = "hang"  # an answer: never reply (until the backend closes)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Backend:
    """``answers[path]``: a list of answers used in turn (the last one repeats); an answer is
    ``(status, json)`` or :data:`HANG`."""

    def __init__(self) -> None:
        self.answers: dict[str, list[Any]] = {}
        self.requests: defaultdict[str, list[Request]] = defaultdict(list)
        self._served: defaultdict[str, int] = defaultdict(int)
        self._closing = asyncio.Event()
        app = tornado.web.Application([(r"(/.*)", _Handler, {"backend": self})])
        self._server = tornado.httpserver.HTTPServer(app)
        [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self._server.add_sockets([sock])
        self.port = sock.getsockname()[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *answers: Any) -> None:
        self.answers[path] = list(answers)
        self._served[path] = 0

    def next_answer(self, path: str) -> Any:
        answers = self.answers.get(path) or [(404, {})]
        i = min(self._served[path], len(answers) - 1)
        self._served[path] += 1
        return answers[i]

    async def hang(self) -> None:
        await self._closing.wait()

    async def close(self) -> None:
        self._closing.set()
        self._server.stop()
        await self._server.close_all_connections()


class _Handler(tornado.web.RequestHandler):
    def initialize(self, backend: Backend) -> None:
        self.backend = backend

    async def post(self, path: str) -> None:
        headers = {k.lower(): v for k, v in self.request.headers.get_all()}
        self.backend.requests[path].append(Request(path, headers, self.request.body))
        answer = self.backend.next_answer(path)
        if answer == HANG:
            await self.backend.hang()
            return
        status, body = answer
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(orjson.dumps(body))


def signed_by(secret: str, request: Request) -> bool:
    """Whether ``request`` carries a valid ``X-Pully-Signature`` for ``secret``."""
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers.get("x-pully-signature", ""), expected)
