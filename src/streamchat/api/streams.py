"""`/v1/streams/{id}`: resume a stream after a dropped connection, or cancel it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import Response

from streamchat.api.auth import require_key
from streamchat.api.errors import APIError
from streamchat.api.state import State
from streamchat.api.streaming import resume_response

router = APIRouter(prefix="/v1/streams", dependencies=[Depends(require_key)])


@router.get("/{stream_id}", response_model=None)
async def resume(
    stream_id: str,
    state: State,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id_query: Annotated[str | None, Query(alias="last_event_id")] = None,
) -> Response:
    """Replay the events after `Last-Event-ID` (header, or `?last_event_id=`), then follow live."""
    return await resume_response(state, last_event_id or last_event_id_query, stream_id)


@router.delete("/{stream_id}")
async def cancel(stream_id: str, state: State) -> dict:
    """Stop generating now; readers still attached receive `[DONE]`."""
    if await state.streams.cancel(stream_id):
        return {"id": stream_id, "object": "stream", "cancelled": True}
    if await state.streams.exists(stream_id):
        return {"id": stream_id, "object": "stream", "cancelled": False, "reason": "already finished"}
    raise APIError(404, f"no stream '{stream_id}' (unknown, or expired)", param="stream_id", code="stream_not_found")
