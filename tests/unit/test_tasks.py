"""``cancel_and_wait``: the background task ends, a cancelled caller stays cancelled, and a task that
will not end holds nobody."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from app.utils.tasks import cancel_and_wait


async def _slow_to_stop(stopped: asyncio.Event) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await asyncio.sleep(0.05)  # cleanup that takes a while, as closing a Redis connection does
        stopped.set()


async def test_returns_once_the_task_has_finished() -> None:
    stopped = asyncio.Event()
    task = asyncio.create_task(_slow_to_stop(stopped))
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled() and stopped.is_set()


async def test_a_cancelled_caller_is_not_swallowed() -> None:
    """A shutdown cancelled while it waits must end cancelled, not carry on as if it had finished."""
    stopped = asyncio.Event()
    task = asyncio.create_task(_slow_to_stop(stopped))
    await asyncio.sleep(0)
    carried_on = False

    async def close() -> None:
        nonlocal carried_on
        await cancel_and_wait(task)
        carried_on = True

    closing = asyncio.create_task(close())
    await asyncio.sleep(0.01)
    closing.cancel()
    await asyncio.wait({closing})
    assert closing.cancelled()
    assert not carried_on
    await asyncio.wait({task})
    assert stopped.is_set()


async def test_a_task_that_ignores_its_cancellation_is_left_behind_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # as a library that loses one would
                await release.wait()

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="conduit.tasks"):
        await cancel_and_wait(task, grace=0.1)
    assert not task.done()
    assert "background task stubborn still running" in caplog.text
    release.set()
    await asyncio.wait({task})
