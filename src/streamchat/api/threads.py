"""Blocking work (loading a model) on a thread of its own, awaited from the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def in_passing_thread(fn: Callable[..., T], *args: object) -> T:
    """Run `fn(*args)` on a thread of its own that ends with it, and await the result.

    Why not `asyncio.to_thread`: GNU OpenMP keeps a team of worker threads for every thread that
    ran a parallel region. A pool thread that loaded the model would keep its team beside the
    engine thread's, and with more OpenMP threads than cores libgomp stops spinning and wakes its
    workers through futexes at every op: the transformers engine decoded ~1.5x slower. A thread
    that ends takes its team with it.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if done.done():  # the awaiting task was cancelled (server stopping during the load)
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task, which logs it
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="streamchat-load", daemon=True).start()
    return await done
