"""OpenAI-compatible routes: `/v1/chat/completions`, `/v1/completions`, `/v1/models`.

Chunks are what the official `openai` SDK parses: the first chat chunk carries `delta.role`, the
last carries `finish_reason`, a usage chunk with empty `choices` follows when
`stream_options.include_usage` is set, then `data: [DONE]`. An error after the stream has started
is sent as an `event: error` carrying the OpenAI error object, followed by `[DONE]`.

Each engine step's chunks go to the stream log as one `Step` with the step's token ids, and a
stream of free text carries a continuation record (`openai_record`): with a shared log another
process can continue it after this one dies (`api/takeover.py`).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from streamchat.api.auth import Owner, require_key
from streamchat.api.disconnect import ClientDisconnectedError, disconnected_response, unless_disconnected
from streamchat.api.errors import APIError, generation_failed_event
from streamchat.api.generation import completion_prompt, generation_request, prepare_chat
from streamchat.api.openai_schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from streamchat.api.openai_shapes import ChatShape, CompletionShape, Shape, usage
from streamchat.api.ready import Ready, ReadyServer
from streamchat.api.state import ModelInfo
from streamchat.api.structured_outputs import compile_constraint, requested_grammar
from streamchat.api.submission import admit, stream_response, submit
from streamchat.engine.types import Delta, GenerationRequest
from streamchat.sse.framing import DONE, to_json
from streamchat.streams.log import Step, StreamEvent

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])


@router.get("/models")
async def list_models(ready: ReadyServer) -> dict:
    """Every served model, the default first; one not loaded yet says so in `status`."""
    cards = [_model_card(ready.model, "ready")]
    extra = ready.state.extra_models
    for name, slot in extra.slots.items() if extra is not None else ():
        cards.append(
            _model_card(slot.info, slot.status) if slot.info is not None else _unloaded_card(name, slot.status)
        )
    return {"object": "list", "data": cards}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, ready: ReadyServer) -> dict:
    cards = {card["id"]: card for card in (await list_models(ready))["data"]}
    if model_id not in cards:
        served = ", ".join(f"'{name}'" for name in cards)
        message = f"The model '{model_id}' does not exist; this server serves {served}"
        raise APIError(404, message, param="model", code="model_not_found")
    return cards[model_id]


def _model_card(info: ModelInfo, status: str) -> dict:
    return {
        "id": info.name,
        "object": "model",
        "created": info.created,
        "owned_by": "streamchat",
        "max_model_len": info.max_model_len,
        "sampling_defaults": info.sampling_defaults,
        "status": status,
    }


def _unloaded_card(name: str, status: str) -> dict:
    return {"id": name, "object": "model", "created": 0, "owned_by": "streamchat", "status": status}


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, ready: ReadyServer, owner: Owner, http: Request) -> Response:
    ready.check_model_name(body.model)
    admit(ready, owner)  # before any tokenizer work
    chat = await prepare_chat(ready, body)
    shape = ChatShape(f"chatcmpl-{uuid.uuid4().hex}", ready.model.name, reads_tool_calls=chat.reads_tool_calls)
    record = None if chat.reads_tool_calls else openai_record(CHAT, shape, body.include_usage, chat.request)
    return await _respond(ready, body, submit(ready, chat.request, owner), shape, http, owner, record)


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, ready: ReadyServer, owner: Owner, http: Request) -> Response:
    ready.check_model_name(body.model)
    admit(ready, owner)  # before any tokenizer work
    if body.echo or body.suffix:
        raise APIError(400, "'echo' and 'suffix' are not supported", param="echo" if body.echo else "suffix")
    prompt_ids = completion_prompt(body.prompt, ready)
    request = generation_request(body, prompt_ids, ready, body.logprobs is not None, body.logprobs or 0, "prompt")
    grammar = requested_grammar(body)
    if grammar is not None:
        request.constraint = await compile_constraint(ready, grammar)
    shape = CompletionShape(f"cmpl-{uuid.uuid4().hex}", ready.model.name)
    record = openai_record(COMPLETION, shape, body.include_usage, request)
    return await _respond(ready, body, submit(ready, request, owner), shape, http, owner, record)


CHAT, COMPLETION = "openai.chat", "openai.completion"  # the protocols of continuation records


def openai_record(protocol: str, shape: Shape, include_usage: bool, request: GenerationRequest) -> dict | None:
    """What another process needs to continue this stream: the chunks' envelope and the request.
    None for answers under a grammar (its state is not rebuilt elsewhere)."""
    if request.constraint is not None:
        return None
    return {
        "protocol": protocol,
        "id": shape.id,
        "created": shape.created,
        "model": shape.model,
        "include_usage": include_usage,
        "prompt": list(request.prompt_token_ids),
        "params": dataclasses.asdict(request.params),
    }


async def _respond(
    ready: Ready,
    body: SamplingFields,
    deltas: AsyncIterator[Delta],
    shape: Shape,
    http: Request,
    owner: str | None,
    record: dict | None = None,
) -> Response:
    if not body.stream:
        try:
            return JSONResponse(await unless_disconnected(http, _collect(deltas, shape)))
        except ClientDisconnectedError:
            return disconnected_response()
    events = openai_events(deltas, shape, body.include_usage)
    return await stream_response(ready, events, body.resumable, owner, continuation=record)


async def _collect(deltas: AsyncIterator[Delta], shape: Shape) -> dict:
    text, logprobs, last = [], [], None
    async for d in deltas:
        text.append(d.text)
        logprobs.extend(d.logprobs)
        last = d
    if last is None or last.error or last.usage is None:
        reason = last.error if last is not None else "no output"
        raise APIError(500, f"generation failed: {reason}", code="generation_failed")
    return shape.whole("".join(text), last, logprobs)


async def openai_events(
    deltas: AsyncIterator[Delta], shape: Shape, include_usage: bool, opened: bool = False
) -> AsyncIterator[StreamEvent | Step]:
    """The stream's events: the opening chunk (unless `opened`: a continued stream), then one
    `Step` per delta with its chunks and token ids, then `[DONE]`."""
    usage_field = {"usage": None} if include_usage else {}
    first = None if opened else shape.opening()
    if first is not None:
        yield StreamEvent(None, to_json({**first, **usage_field}))
    async for d in deltas:
        if d.error:
            yield Step((generation_failed_event(d.error),), d.token_ids, final=True)
            break
        events = [StreamEvent(None, to_json({**chunk, **usage_field})) for chunk in shape.chunks(d)]
        if d.finished and include_usage and d.usage is not None:
            events.append(StreamEvent(None, to_json({**shape.envelope(), "choices": [], "usage": usage(d.usage)})))
        yield Step(tuple(events), d.token_ids, final=d.finished)
    yield StreamEvent(None, DONE)
