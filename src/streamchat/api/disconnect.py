"""Non-streamed answers stop when their client leaves.

A streamed answer learns of a disconnect from its SSE response; a plain JSON answer sends nothing
until it is done, so without a watch a client that gives up (a timeout, a closed tab) would leave
its whole generation running. `unless_disconnected` races the work against the ASGI
`http.disconnect` message and cancels the work, which aborts the request in the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import Response

T = TypeVar("T")

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left first; nobody receives it


class ClientDisconnectedError(Exception):
    pass


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; if the client leaves first, cancel it and raise `ClientDisconnectedError`."""
    task = asyncio.ensure_future(work)
    watch = asyncio.create_task(_until_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # cancelled ourselves (shutdown): the work goes too
        task.cancel()
        raise
    finally:
        watch.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientDisconnectedError


def disconnected_response() -> Response:
    return Response(status_code=CLIENT_CLOSED_REQUEST)
