"""Anthropic's Messages API: `POST /v1/messages`, `POST /v1/messages/count_tokens`.

What the official `anthropic` SDK sends and parses. The body is translated into an OpenAI chat
request (`anthropic_chat.py`) and takes the one engine path (`generation.prepare_chat`, then
`submission`); only the shapes of what goes back are Anthropic's (`anthropic_shapes.py`). A
stream's events go through the stream log like every protocol's, so each carries our `id:` and a
dropped stream resumes at `GET /v1/streams/{id}` with `Last-Event-ID`. A generation that fails
after the stream has started, or a stream cut short (cancelled, abandoned, the server shutting
down), ends with Anthropic's `event: error`. Errors before it are
answered in Anthropic's shape by `errors.shaped_error` (the path decides).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from streamchat.api.anthropic_chat import chat_request
from streamchat.api.anthropic_schemas import Conversation, MessagesRequest
from streamchat.api.anthropic_shapes import MessageEvents, MessageShape, closing, error_event, new_id
from streamchat.api.auth import Owner, require_key
from streamchat.api.disconnect import ClientDisconnectedError, disconnected_response, unless_disconnected
from streamchat.api.errors import APIError
from streamchat.api.generation import prepare_chat
from streamchat.api.ready import ReadyServer
from streamchat.api.submission import admit, stream_response, submit
from streamchat.engine.types import Delta
from streamchat.streams.log import StreamEvent

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])


@router.post("/messages", response_model=None)
async def create_message(body: MessagesRequest, ready: ReadyServer, owner: Owner, http: Request) -> Response:
    ready.check_model_name(body.model)
    admit(ready, owner)  # before any tokenizer work
    chat = await prepare_chat(ready, chat_request(body, body.max_tokens))
    request = chat.request
    shape = MessageShape(
        new_id("msg"),
        ready.model.name,
        len(request.prompt_token_ids),
        chat.reads_tool_calls,
        request.params.stop,
        ready.model.tokenizer,
    )
    deltas = submit(ready, request, owner)
    if not body.stream:
        try:
            return JSONResponse(await unless_disconnected(http, _collect(deltas, shape)))
        except ClientDisconnectedError:
            return disconnected_response()
    return await stream_response(ready, _events(deltas, MessageEvents(shape)), body.resumable, owner, closing)


@router.post("/messages/count_tokens")
async def count_tokens(body: Conversation, ready: ReadyServer, owner: Owner) -> dict:
    """The prompt's length as `create` renders it: same template, tools and grammar checks."""
    ready.check_model_name(body.model)
    admit(ready, owner)
    chat = await prepare_chat(ready, chat_request(body, 1))
    return {"input_tokens": len(chat.request.prompt_token_ids)}


async def _collect(deltas: AsyncIterator[Delta], shape: MessageShape) -> dict:
    text, token_ids, last = [], [], None
    async for d in deltas:
        text.append(d.text)
        token_ids.extend(d.token_ids)
        last = d
    if last is None or last.error or last.usage is None:
        reason = last.error if last is not None else "no output"
        raise APIError(500, f"generation failed: {reason}", code="generation_failed")
    return shape.whole("".join(text), last, token_ids)


async def _events(deltas: AsyncIterator[Delta], stream: MessageEvents) -> AsyncIterator[StreamEvent]:
    for event in stream.opening():
        yield event
    async for d in deltas:
        if d.error:
            yield error_event(500, f"generation failed: {d.error}")
            return
        for event in stream.feed(d):
            yield event
