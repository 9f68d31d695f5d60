"""Event listeners: sync or async callables; a failing listener is logged, never propagated."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import Any

logger = logging.getLogger("pully.client")

Listener = Callable[[Any], object]


class Emitter:
    """Named events to listeners, called in registration order.

    A listener returning an awaitable gets it run as a task (tracked, so :meth:`aclose` can
    finish it); an exception in a listener is logged on ``pully.client`` and goes no further.
    """

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def add(self, name: str, listener: Listener) -> Callable[[], None]:
        """Register ``listener`` for ``name``; the returned function removes it."""
        self._listeners.setdefault(name, []).append(listener)

        def remove() -> None:
            listeners = self._listeners.get(name, [])
            if listener in listeners:
                listeners.remove(listener)

        return remove

    def wants(self, name: str) -> bool:
        return bool(self._listeners.get(name))

    def emit(self, name: str, event: object) -> None:
        for listener in list(self._listeners.get(name, ())):
            try:
                result = listener(event)
            except Exception:
                logger.exception("pully client: %s listener %r failed", name, listener)
                continue
            if inspect.isawaitable(result):
                self.spawn(_await(result), f"{name} listener")

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(t, what))
        return task

    def _done(self, task: asyncio.Task[Any], what: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("pully client: %s failed", what, exc_info=exc)

    async def aclose(self, timeout: float = 1.0) -> None:
        """Let running listener tasks finish (up to ``timeout``), then cancel the rest."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _await(awaitable: Any) -> None:
    await awaitable
