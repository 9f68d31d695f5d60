"""The admin HTTP routes as an operator's script calls them (blocking, from this machine, with
``Content-Type: application/json``): async for in-process nodes, blocking for ``pully serve``
processes."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import orjson
import tornado.httpclient

from .support import PullyProcess


async def call(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    """An admin request from this machine (async, in-process tests): status and decoded reply."""
    raw = None if body is None else orjson.dumps(body)
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        url, method=method, body=raw, headers={"Content-Type": "application/json"},
        raise_error=False,
    )  # fmt: skip
    return response.code, orjson.loads(response.body)


def admin(node: PullyProcess, path: str, body: Any = None) -> tuple[int, Any]:
    """``GET`` (no ``body``) or ``POST`` ``body`` as JSON to ``path``: status and decoded reply."""
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(
        node.url + path, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def http_publish(node: PullyProcess, channel: str, data: Any) -> dict[str, Any]:
    """The admin HTTP publish (loopback callers need no token)."""
    status, reply = admin(node, "/publish", {"channel": channel, "data": data})
    assert status == 200, reply
    return dict(reply)
