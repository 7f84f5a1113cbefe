"""Helpers for background asyncio tasks."""

from __future__ import annotations

import asyncio
import logging

logger = logging.getLogger("conduit.tasks")

# Seconds a cancelled background task gets to finish. Its cleanup (closing a connection) is bounded by
# its own timeouts, but a task that swallows its cancellation, in our code or a library's, must not
# hold a shutdown forever.
STOP_GRACE = 5.0


async def cancel_and_wait(task: asyncio.Task[None], grace: float = STOP_GRACE) -> None:
    """Cancel ``task`` and wait until it has finished, for ``grace`` seconds at most.

    ``asyncio.wait`` neither raises the task's ``CancelledError`` nor swallows ours: awaiting the task
    inside ``suppress(CancelledError)`` would also swallow a cancellation of the caller (a shutdown
    that is itself being cancelled), which would then carry on as if nothing had happened. A task
    still running after ``grace`` is logged and left behind, so that a hang is seen, not waited on.
    """
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        logger.warning(
            "background task %s still running %.0f s after its cancellation", task.get_name(), grace
        )
