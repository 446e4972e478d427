"""asyncio helpers of the gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Interrupted(Exception):
    """``unless``: the interruption came first."""


async def unless(work: Awaitable[T], interrupt: Awaitable[object]) -> T:
    """``work``'s result, unless ``interrupt`` finishes first: then ``work`` is cancelled, awaited (so that
    its cancellation has reached whatever it waited on, a gRPC call say) and ``Interrupted`` raised.
    Cancelling the caller cancels both."""
    task, stop = asyncio.ensure_future(work), asyncio.ensure_future(interrupt)
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not task.done():
            task.cancel()
    if task.done():
        return task.result()
    try:
        await task
    except asyncio.CancelledError:
        pass
    raise Interrupted()


async def cancel_and_wait(*tasks: asyncio.Future) -> None:
    """Cancel ``tasks`` and wait until each has ended (its cancellation has reached whatever it awaited)."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
