"""Asking every node: the server API's cluster-wide calls over the broker's control channel.

Every node hears the ``control`` topic (``Broker.publish_control``). On it travel:

- ``{"kind": "hello", "node": N, "ask"?: true}``: a node says it is alive, every
  ``HELLO_INTERVAL`` seconds and at start (with ``ask``: the others answer with their own hello
  at once, so a new node knows the cluster within a round trip); ``{"kind": "bye"}`` when it
  closes. A node not heard for ``3 * HELLO_INTERVAL`` is taken for gone.
- ``{"kind": "ask", "id": I, "from": N, "op": OP, "params": {...}}``: a request; every other
  node runs ``OP`` on its own connections and answers
  ``{"kind": "answer", "id": I, "to": N, "node": M, "result": ...}`` (or ``"error"``).

:meth:`Survey.ask` runs the op here too, then waits for the answers of the nodes it knows, at
most ``timeout`` seconds: a node that did not answer by then (frozen, partitioned, just
crashed) is named in ``missing``, never waited for longer. With the memory engine there are no
other nodes and the answer is this node's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..errors import PullyError, Unavailable
from ..tasks import stop

logger = logging.getLogger("pully.api")

TOPIC = "control"
HELLO_INTERVAL = 5.0
MAX_WAITING = 256  # cluster-wide calls in flight on one node at most

Op = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass(slots=True)
class Answers:
    """Each answering node's result (this node's first), and the nodes that did not answer."""

    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


class Survey:
    def __init__(
        self,
        node_id: str,
        publish: Callable[[str, bytes], Awaitable[None]],
        ops: dict[str, Op],
        timeout: float,
    ) -> None:
        self._node = node_id
        self._publish = publish
        self._ops = ops
        self.timeout = timeout
        self._peers: dict[str, float] = {}  # node -> when last heard (monotonic)
        self._waiting: dict[str, tuple[Answers, set[str], asyncio.Event]] = {}
        self._ids = itertools.count()
        self._prefix = secrets.token_hex(4)
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._hello_forever())

    async def close(self) -> None:
        await stop(self._task)
        self._task = None
        with contextlib.suppress(PullyError):
            await self._send({"kind": "bye", "node": self._node})
        for task in list(self._running):
            task.cancel()

    async def _hello_forever(self) -> None:
        ask = True
        while True:
            try:
                await self._send({"kind": "hello", "node": self._node, "ask": ask})
                ask = False
            except PullyError:
                ask = True  # the broker is down: ask again once it is back
            await asyncio.sleep(HELLO_INTERVAL if not ask else 1.0)

    def peers(self) -> list[str]:
        """The other nodes heard from lately, sorted."""
        horizon = time.monotonic() - 3 * HELLO_INTERVAL
        for gone in [n for n, heard in self._peers.items() if heard < horizon]:
            del self._peers[gone]
        return sorted(self._peers)

    # -- asking ------------------------------------------------------------------------------

    async def ask(self, op: str, params: dict[str, Any]) -> Answers:
        """Run ``op`` on every node (here first) and gather the answers (bounded wait).
        Raises ``Unavailable`` when the other nodes cannot be asked (nothing done then)."""
        if len(self._waiting) >= MAX_WAITING:
            raise Unavailable(f"{MAX_WAITING} cluster-wide calls are in flight on this node")
        request_id = f"{self._prefix}-{next(self._ids)}"
        answers, expected, done = Answers(), set(self.peers()), asyncio.Event()
        self._waiting[request_id] = (answers, expected, done)
        try:
            if expected:
                await self._send({"kind": "ask", "id": request_id, "from": self._node,
                                  "op": op, "params": params})  # fmt: skip
            answers.results[self._node] = await self._ops[op](params)
            if expected:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.timeout):
                        await done.wait()
        finally:
            del self._waiting[request_id]
        answers.missing = sorted(expected)
        return answers

    async def _send(self, message: dict[str, Any]) -> None:
        try:
            await self._publish(TOPIC, orjson.dumps(message))
        except Unavailable as exc:
            raise Unavailable(f"the other nodes cannot be asked: {exc.message}") from None

    # -- hearing -------------------------------------------------------------------------------

    def on_message(self, payload: bytes) -> None:
        try:
            message = orjson.loads(payload)
            kind, node = message["kind"], str(message.get("node", ""))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            logger.warning("ignoring a malformed control message: %r", payload[:200])
            return
        if kind == "ask":
            if message.get("from") != self._node:
                self._spawn(self._answer(message))
            return
        if node == self._node or not node:
            return
        if kind == "hello":
            self._peers[node] = time.monotonic()
            if message.get("ask"):
                self._spawn(self._hello_back())
        elif kind == "bye":
            self._peers.pop(node, None)
        elif kind == "answer" and message.get("to") == self._node:
            self._peers[node] = time.monotonic()
            self._answered(message, node)

    def _answered(self, message: dict[str, Any], node: str) -> None:
        waiting = self._waiting.get(str(message.get("id")))
        if waiting is None:
            return  # too late: the call returned without it
        answers, expected, done = waiting
        if "error" in message and isinstance(message["error"], dict):
            answers.errors[node] = message["error"]
        else:
            answers.results[node] = message.get("result")
        expected.discard(node)
        if not expected:
            done.set()

    async def _hello_back(self) -> None:
        with contextlib.suppress(PullyError):
            await self._send({"kind": "hello", "node": self._node})

    async def _answer(self, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"kind": "answer", "id": message.get("id"),
                                 "to": message.get("from"), "node": self._node}  # fmt: skip
        op, params = message.get("op"), message.get("params")
        try:
            if op not in self._ops or not isinstance(params, dict):
                raise Unavailable(f"this node does not know the operation {op!r}")
            reply["result"] = await self._ops[op](params)
        except PullyError as exc:
            reply["error"] = {"code": exc.code, "message": exc.message}
        except Exception:
            logger.exception("server API: %s from %s failed here", op, message.get("from"))
            reply["error"] = {"code": "internal", "message": "internal error"}
        with contextlib.suppress(PullyError):
            await self._send(reply)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
