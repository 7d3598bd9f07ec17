"""Starting a stream and resuming one: both are readers of the stream log.

`stream_response` starts the producer and answers with the live stream from its first event and
an `X-Stream-Id` header. `resume_response` replays what came after a `Last-Event-ID` and goes on
live. A finished stream with nothing left to send answers 204, which also tells a browser's
`EventSource` to stop reconnecting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.responses import Response

from streamchat.api.errors import APIError
from streamchat.api.state import ServerState
from streamchat.sse.response import sse_response
from streamchat.streams.manager import BadEventIdError, Event, parse_event_id


async def stream_response(state: ServerState, events: AsyncIterator[Event], resumable: bool) -> Response:
    stream_id = await state.streams.start(events, resumable)
    return sse_response(
        state.streams.read(stream_id), ping_interval=state.settings.ping_interval, headers={"X-Stream-Id": stream_id}
    )


async def resume_response(
    state: ServerState, last_event_id: str | None, stream_id: str | None, gone_status: int = 404
) -> Response:
    """Resume `stream_id` (or the stream named by `last_event_id`) after `last_event_id`."""
    after = -1
    if last_event_id:
        try:
            sid, after = parse_event_id(last_event_id, stream_id)
        except BadEventIdError as exc:
            raise APIError(400, str(exc), param="Last-Event-ID") from exc
        stream_id = stream_id or sid
    assert stream_id is not None
    if not await state.streams.exists(stream_id):
        if gone_status == 204:
            return Response(status_code=204)
        raise APIError(
            404, f"no stream '{stream_id}' (unknown, or expired)", param="stream_id", code="stream_not_found"
        )
    if await state.streams.finished(stream_id) and after >= await state.streams.last_seq(stream_id):
        return Response(status_code=204)
    return sse_response(
        state.streams.read(stream_id, after, resumed=True),
        ping_interval=state.settings.ping_interval,
        headers={"X-Stream-Id": stream_id},
    )
