"""``tasks.stop``: how every background loop is stopped (cancel, wait, absorb only its own
cancellation)."""

from __future__ import annotations

import asyncio

import pytest

from pully_tornado.tasks import stop

pytestmark = pytest.mark.gen_test(timeout=10)


async def test_stop_cancels_a_running_task_and_waits_for_its_cleanup() -> None:
    cleaned = []

    async def loop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits still runs to the end
            cleaned.append(True)

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    await stop(task)
    assert task.cancelled() and cleaned == [True]
    await stop(task)  # a finished task: nothing to do
    await stop(None)


async def test_stop_lets_a_failure_of_the_task_through() -> None:
    async def broken() -> None:
        raise RuntimeError("loop died")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="loop died"):
        await stop(task)


async def test_a_caller_cancelled_while_stopping_stays_cancelled() -> None:
    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(3600)  # slow to stop: the caller is cancelled meanwhile

    inner = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    outer = asyncio.create_task(stop(inner))
    await asyncio.sleep(0.01)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    inner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await inner
