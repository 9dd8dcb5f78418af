"""A coroutine that runs in the background while its owner is started."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class BackgroundTask:
    """Runs ``run()`` as one named asyncio task: started at most once, and on
    :meth:`stop` cancelled and awaited, so nothing of it is left running.

    What the library lacked: ``asyncio.TaskGroup`` ends with the block that
    opens it, and these tasks live from a ``start()`` to a ``stop()`` called
    from elsewhere (an app's lifespan, a session's close).
    """

    def __init__(self, run: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._run = run
        self._name = name
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the task was started and not stopped yet."""
        return self._task is not None

    def start(self) -> None:
        """Start the task, unless it is running already."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Cancel the task and wait until it has ended (nothing when it is not running)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
