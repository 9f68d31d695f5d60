"""Background tasks: stopping one, and an owner's fire-and-forget work, each written once.

Every background loop (broker subscriber, sweeper, keepalive, relationships poller) is stopped
the same way: cancel it, then wait until it has really finished, so nothing it owns is used
after its owner closed. Pure stdlib: the client package may use it too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from .errors import PullyError


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait until it has finished (None: nothing to do).

    The ``CancelledError`` the task ends with is absorbed; any other exception the task ended
    with (it failed before or while being cancelled) propagates. If the *caller* is cancelled
    while waiting, that cancellation propagates too, as it must. The caller drops its
    reference afterwards (``self._task = None``) if it keeps one.
    """
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


class Background:
    """Fire-and-forget work of one owner (presence joins and leaves, broker unsubscribes, gap
    fills): every task is kept until it ends, a failure is logged (one line for an expected
    ``PullyError``, a traceback for anything else), and :meth:`close` lets them finish for a
    while before cancelling the rest."""

    def __init__(self, logger: logging.Logger) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._logger = logger

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, PullyError):
                self._logger.warning("background %s failed: %s", task.get_coro(), exc.message)
            else:
                self._logger.error("background task failed", exc_info=exc)

    async def close(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the tasks, then cancel what is left."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
