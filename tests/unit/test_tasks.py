"""``cancel_and_wait``: the background task ends, and a cancelled caller stays cancelled."""

from __future__ import annotations

import asyncio

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
