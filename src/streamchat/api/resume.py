"""Coming back to a stream: `GET /v1/streams/{id}` resumes it after `Last-Event-ID`, `DELETE` cancels it.

A resumed response replays what came after the given event and goes on live. A finished stream
with nothing left to send answers 204, which also tells a browser's `EventSource` to stop
reconnecting. The seed's `GET /stream` resumes through `resume_response` too.

A stream belongs to the caller that started it: another API key gets the same 404 as for a stream
that never existed. On a server without keys, whoever holds a stream's id may resume or cancel it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import Response

from streamchat.api.auth import Owner, require_key
from streamchat.api.errors import APIError
from streamchat.api.state import ServerState, State
from streamchat.sse.response import sse_response
from streamchat.streams.manager import BadEventIdError, parse_event_id

router = APIRouter(prefix="/v1/streams", dependencies=[Depends(require_key)])


def resume_point(last_event_id: str, stream_id: str | None = None) -> tuple[str, int]:
    """(stream id, last sequence number seen) from a `Last-Event-ID`; 400 when it is not ours."""
    try:
        return parse_event_id(last_event_id, stream_id)
    except BadEventIdError as exc:
        raise APIError(400, str(exc), param="Last-Event-ID") from exc


def stream_not_found(stream_id: str) -> APIError:
    return APIError(404, f"no stream '{stream_id}' (unknown, or expired)", param="stream_id", code="stream_not_found")


async def resume_response(
    state: ServerState, stream_id: str, after: int, owner: str | None, gone_status: int = 404
) -> Response:
    """The events of `stream_id` after sequence number `after`, then live ones until it ends."""
    streams = state.streams
    if not await streams.exists(stream_id, owner):
        if gone_status == 204:
            return Response(status_code=204)
        raise stream_not_found(stream_id)
    if await streams.finished(stream_id) and after >= await streams.last_seq(stream_id):
        return Response(status_code=204)
    return sse_response(
        streams.read(stream_id, after, resumed=True),
        ping_interval=state.settings.ping_interval,
        headers={"X-Stream-Id": stream_id},
    )


@router.get("/{stream_id}", response_model=None)
async def resume(
    stream_id: str,
    state: State,
    owner: Owner,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id_query: Annotated[str | None, Query(alias="last_event_id")] = None,
) -> Response:
    """Replay the events after `Last-Event-ID` (header, or `?last_event_id=`), then follow live."""
    given = last_event_id or last_event_id_query
    after = resume_point(given, stream_id)[1] if given else -1
    return await resume_response(state, stream_id, after, owner)


@router.delete("/{stream_id}")
async def cancel(stream_id: str, state: State, owner: Owner) -> dict:
    """Stop generating now; readers still attached receive an `event: error` (`cancelled`), then `[DONE]`."""
    if not await state.streams.exists(stream_id, owner):
        raise stream_not_found(stream_id)
    if await state.streams.cancel(stream_id):
        return {"id": stream_id, "object": "stream", "cancelled": True}
    return {"id": stream_id, "object": "stream", "cancelled": False, "reason": "already finished"}
