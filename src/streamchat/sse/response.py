"""An SSE response: the body's events, keep-alive comments, and disconnect handling.

sse-starlette runs sending, pinging and listening for a disconnect as one task group; the first to
finish cancels the rest, which closes our body generator and so aborts the request in the engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette.sse import EventSourceResponse
from starlette.types import Message, Send

from streamchat.sse import framing

STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx and similar proxies must not hold the stream back
}


class _SSEResponse(EventSourceResponse):
    """sse-starlette opens an anyio cancel scope around every send to apply `send_timeout`, even
    when there is none (ours: a slow reader is handled by the stream log, not by cutting it off).
    On a 2-core machine that scope was a quarter of the event loop's time per token, which the
    engine's threads then lacked; without a timeout we send directly."""

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


def sse_response(
    body: AsyncIterator[bytes], *, ping_interval: float, headers: dict[str, str] | None = None
) -> EventSourceResponse:
    return _SSEResponse(
        body,
        headers={**STREAM_HEADERS, **(headers or {})},
        ping=ping_interval,
        ping_message_factory=lambda: framing.comment("ping"),  # bytes pass through unchanged
        sep="\n",
    )
