"""An SSE response: the body's events, keep-alive comments, and disconnect handling.

sse-starlette runs sending, pinging and listening for a disconnect as one task group; the first to
finish cancels the rest, which closes our body generator and so aborts the request in the engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette.sse import EventSourceResponse

from streamchat.sse import framing

STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx and similar proxies must not hold the stream back
}


def sse_response(
    body: AsyncIterator[bytes], *, ping_interval: float, headers: dict[str, str] | None = None
) -> EventSourceResponse:
    return EventSourceResponse(
        body,
        headers={**STREAM_HEADERS, **(headers or {})},
        ping=ping_interval,
        ping_message_factory=lambda: framing.comment("ping"),  # bytes pass through unchanged
        sep="\n",
    )
