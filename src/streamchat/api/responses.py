"""OpenAI's Responses API: `POST /v1/responses`, `GET`/`DELETE /v1/responses/{id}`, `POST …/cancel`.

A response is stored by default (`store`), bounded by count and age, and visible only to the
key that created it; `previous_response_id` continues its conversation. Streamed and background
responses write their events into the stream log like every other stream, as detached producers
for `background` (they run to the end whoever is reading), so `GET /v1/responses/{id}?stream=true
&starting_after=N` re-attaches: it replays the events after sequence number N, then follows live.

The store is this process's memory, or Redis with `--stream-store redis://…` (`response_store.py`):
then a response created on one process is read, chained, cancelled or deleted through any other.
The process running it writes its object through as it is created, starts and ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from streamchat.api.auth import Owner, require_key
from streamchat.api.disconnect import ClientDisconnectedError, disconnected_response, unless_disconnected
from streamchat.api.errors import APIError
from streamchat.api.generation import prepare_chat
from streamchat.api.ready import Ready, ReadyServer
from streamchat.api.response_events import ResponseRun, new_id
from streamchat.api.response_store import ResponseStore, StoredResponse
from streamchat.api.responses_schemas import ResponseRequest, chat_request, input_messages
from streamchat.api.resume import resume_response
from streamchat.api.state import State
from streamchat.api.submission import admit, submit
from streamchat.sse.response import sse_response
from streamchat.streams.log import StreamEvent, StreamStoreUnavailableError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

_RUNNING = ("queued", "in_progress")
_SAVED_AT = ("response.in_progress", "response.completed", "response.incomplete", "response.failed")


@router.post("/responses", response_model=None)
async def create_response(body: ResponseRequest, ready: ReadyServer, owner: Owner, http: Request) -> Response:
    ready.check_model_name(body.model)
    if body.background and not body.store:
        raise APIError(400, "a background response must be stored ('store': true)", param="background")
    admit(ready, owner)  # before any tokenizer work
    store = ready.state.responses
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        previous = await store.get(body.previous_response_id, owner)
        if previous is None:
            raise _not_found(body.previous_response_id, "previous_response_id")
        history = list(previous.conversation)
    messages = history + input_messages(body)
    chat = await prepare_chat(ready, chat_request(body, messages))
    response_id = new_id("resp")
    stored = StoredResponse(response_id, owner, _response_object(ready, body, response_id), messages)
    run = ResponseRun(stored, chat.reads_tool_calls)
    if body.store:
        await store.put(stored)  # before the engine starts: a store that cannot be reached refuses it
    try:
        deltas = submit(ready, chat.request, owner)
    except APIError:
        if body.store:  # refused by the engine: nothing to keep
            with contextlib.suppress(StreamStoreUnavailableError):
                await store.delete(response_id, owner)
        raise
    events = run.events(deltas)
    if body.store:
        events = _stored_run(store, stored, events, functools.partial(ready.engine.abort, chat.request.request_id))
    if body.stream or body.background:
        streams = ready.state.streams
        stored.stream_id = await streams.start(events, True, owner, detached=body.background)
        if body.store:
            await _save(store, stored)  # where other processes re-attach
        if body.stream:
            headers = {"X-Stream-Id": stored.stream_id}
            return sse_response(streams.read(stored.stream_id), ping_interval=ready.state.settings.ping_interval,
                                headers=headers)  # fmt: skip
        return JSONResponse(stored.body)
    try:
        await unless_disconnected(http, _drain(events))
    except ClientDisconnectedError:
        return disconnected_response()
    return JSONResponse(stored.body)


async def _drain(events: AsyncIterator[StreamEvent]) -> None:
    async with contextlib.aclosing(events):
        async for _ in events:
            pass


async def _stored_run(
    store: ResponseStore, stored: StoredResponse, events: AsyncIterator[StreamEvent], abort: Callable[[], None]
) -> AsyncIterator[StreamEvent]:
    """A stored response's events: its object written through as it starts and before its last
    event goes out (a client that saw the end reads the end anywhere), and `abort` reachable from
    any process's cancel while it runs."""
    with store.running(stored, abort):
        async for event in events:
            if event.name in _SAVED_AT:
                await _save(store, stored)
            yield event


async def _save(store: ResponseStore, stored: StoredResponse) -> None:
    """Write the object through; an unreachable store leaves the answer itself going."""
    try:
        await store.save(stored)
    except StreamStoreUnavailableError as exc:
        log.warning("response %s not saved: %s", stored.id, exc)


@router.get("/responses/{response_id}", response_model=None)
async def get_response(
    response_id: str,
    state: State,
    owner: Owner,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=-1)] = None,
) -> Response:
    stored = await state.responses.get(response_id, owner)
    if stored is None:
        raise _not_found(response_id)
    if not stream:
        return JSONResponse(stored.body)
    if stored.stream_id is None or not await state.streams.exists(stored.stream_id, owner):
        raise APIError(400, f"the events of response '{response_id}' are not kept (only streamed or background "
                       "responses can be re-attached, within the stream retention)", param="stream")  # fmt: skip
    after = starting_after if starting_after is not None else -1
    return await resume_response(state, stored.stream_id, after, owner)


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, ready: ReadyServer, owner: Owner) -> JSONResponse:
    store = ready.state.responses
    stored = await store.get(response_id, owner)
    if stored is None:
        raise _not_found(response_id)
    if not stored.body.get("background"):
        raise APIError(400, "only background responses can be cancelled", param="response_id")
    return JSONResponse((await _stop(store, stored)).body)


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, ready: ReadyServer, owner: Owner) -> dict:
    store = ready.state.responses
    stored = await store.get(response_id, owner)
    if stored is None:
        raise _not_found(response_id)
    await _stop(store, stored)
    if await store.delete(response_id, owner) is None:  # deleted by another request meanwhile
        raise _not_found(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


async def _stop(store: ResponseStore, stored: StoredResponse, patience: float = 30.0) -> StoredResponse:
    """Stop the answer if it still runs, wherever it runs, and wait (briefly) until its stored
    object says how it ended; that object."""
    if stored.body["status"] not in _RUNNING:
        return stored
    await store.cancel(stored)
    deadline = time.monotonic() + patience
    while stored.body["status"] in _RUNNING and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        latest = await store.get(stored.id, stored.owner)
        if latest is None:  # deleted meanwhile
            break
        stored = latest
    return stored


def _not_found(response_id: str, param: str = "response_id") -> APIError:
    return APIError(404, f"Response with id '{response_id}' not found.", param=param, code="response_not_found")


def _response_object(ready: Ready, body: ResponseRequest, response_id: str) -> dict[str, Any]:
    fmt = body.text.format.model_dump(by_alias=True, exclude_none=True)
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "queued" if body.background else "in_progress",
        "background": body.background,
        "error": None,
        "incomplete_details": None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "model": ready.model.name,
        "output": [],
        "parallel_tool_calls": body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "store": body.store,
        "temperature": body.temperature,
        "text": {"format": fmt},
        "tool_choice": body.tool_choice if isinstance(body.tool_choice, str) else body.tool_choice.model_dump(),
        "tools": [t.model_dump(exclude_none=True) for t in body.tools],
        "top_p": body.top_p,
        "truncation": body.truncation or "disabled",
        "usage": None,
        "user": body.user,
        "metadata": body.metadata or {},
    }
