"""Helpers for background asyncio tasks."""

from __future__ import annotations

import asyncio


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has finished.

    ``asyncio.wait`` neither raises the task's ``CancelledError`` nor swallows ours: awaiting the task
    inside ``suppress(CancelledError)`` would also swallow a cancellation of the caller (a shutdown
    that is itself being cancelled), which would then carry on as if nothing had happened.
    """
    task.cancel()
    await asyncio.wait({task})
